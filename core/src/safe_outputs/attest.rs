//! The provenance of an applied change: the applier ([`super::apply`]) calls [`Attestor::
//! attest`] once it knows what it will write (a pull request's built commit and tree, or a
//! comment's, label set's or issue's exact text) and before it writes it; the statement
//! (`plue_provenance`) is made of what the store holds of the run, its step, its attempt,
//! the proposal and its decision, signed with the engine's key and recorded
//! (`store::provenance`). The pull request's body and its commit's trailer link to it by
//! [`statement_url`], which needs only the proposal's id, so the commit can name it.
//!
//! Invariants:
//! - A change is written only once its statement is recorded: a statement that cannot be
//!   made or stored fails the apply (to be retried), never lets it through unattested.
//! - A statement is recorded `pending`: signed before the write, it says nothing of
//!   whether the forge accepted it. It becomes `applied` (and is served) only with its
//!   proposal, once the write landed, or `failed` with the write's reason
//!   (`store::provenance`, [`super::apply`]).
//! - Every resource descriptor of a statement names its resource by `uri`, `digest` or
//!   `content` (in-toto v1's rule), checked before it is signed; `usage` carries its JSON
//!   as `content` with its sha256.
//! - The first statement recorded for a proposal is the one served (a retry's new
//!   signature is dropped by the store), and the commit it attests is deterministic.
//! - The proposal's threat check, when it ran, is recorded as it was stored (its findings
//!   already through the run's wall): `proposal.threatCheck` ([`threat_check`]).
//! - What is recorded of the prompts and the transcript are digests, never the texts (the
//!   statement is readable by whoever may read the run, and the texts may hold what the
//!   run's wall would mask); the diff is recorded whole, as it passed the run's wall.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use evaluator::plan::{Action, Plan};
use evaluator::EvalContext;
use plue_provenance::statement::{self as st, ResourceDescriptor, Statement};
use plue_provenance::{PublicKey, Signer};
use plue_store::{ProposalRow, RepoRow, RunRow, Store};

use crate::artifacts::Artifacts;
use crate::transcripts::{self, Kept};

/// Where the statement of proposal `proposal_id` of run `run_id` is served.
pub fn statement_url(public_url: &str, run_id: i64, proposal_id: i64) -> String {
    format!(
        "{}/api/runs/{run_id}/proposals/{proposal_id}/provenance",
        public_url.trim_end_matches('/')
    )
}

/// What a change is: a commit, or a text written as it is.
pub enum Subject<'a> {
    /// A pull request's commit on `branch`, built from `diff` on the run's commit.
    Commit {
        branch: &'a str,
        commit: &'a str,
        tree: &'a str,
        diff: &'a [u8],
    },
    /// A comment's or issue's body (without Plue's marker), or the labels one per line.
    Text(&'a str),
}

/// The proposal being applied, and what it belongs to.
pub struct Change<'a> {
    pub row: &'a ProposalRow,
    pub run: &'a RunRow,
    pub repo: &'a RepoRow,
    pub step_id: &'a str,
    pub plan: &'a Plan,
    pub context: Option<&'a EvalContext>,
}

/// The engine's provenance keys: the one it signs with, and those it signed with before
/// (kept listed so statements signed before a rotation still verify).
#[derive(Debug, Clone)]
pub struct Keys {
    pub signer: Arc<Signer>,
    pub previous: Vec<PublicKey>,
}

impl Keys {
    /// Lists every key in the store (`GET /api/provenance/keys` shows them); a key listed
    /// by an earlier start stays listed.
    pub async fn list(&self, store: &Store) -> anyhow::Result<()> {
        for key in self.previous.iter().chain([&self.signer.public()]) {
            store
                .record_signing_key(key.id(), &key.hex())
                .await
                .context("listing the provenance keys")?;
        }
        Ok(())
    }

    /// The attestor signing with the current key, reading transcripts from `artifacts`.
    pub fn attestor(&self, artifacts: Arc<Artifacts>) -> Attestor {
        Attestor {
            signer: self.signer.clone(),
            artifacts: Some(artifacts),
        }
    }
}

/// Signs and records statements.
#[derive(Clone)]
pub struct Attestor {
    pub signer: Arc<Signer>,
    /// Where transcripts are read from (the prompts' digests and the tools offered come
    /// from the first request); without it they are not recorded.
    pub artifacts: Option<Arc<Artifacts>>,
}

impl Attestor {
    /// Makes, signs and records the statement of `change` as `subject`, applied by the
    /// engine at `public_url` at `now_ms`; the envelope kept (JSON).
    pub async fn attest(
        &self,
        store: &Store,
        public_url: &str,
        change: &Change<'_>,
        subject: Subject<'_>,
        now_ms: i64,
    ) -> anyhow::Result<String> {
        let statement = self
            .statement(store, public_url, change, subject, now_ms)
            .await
            .context("making the provenance statement")?;
        statement
            .check_descriptors()
            .context("making the provenance statement")?;
        let envelope = plue_provenance::sign(&statement, &self.signer);
        let public = self.signer.public();
        store.record_signing_key(public.id(), &public.hex()).await?;
        store
            .record_statement(
                change.row.id,
                change.row.run_id,
                public.id(),
                &serde_json::to_string(&envelope)?,
            )
            .await
            .context("recording the provenance statement")
    }

    async fn statement(
        &self,
        store: &Store,
        public_url: &str,
        change: &Change<'_>,
        subject: Subject<'_>,
        now_ms: i64,
    ) -> anyhow::Result<Statement> {
        let (row, run) = (change.row, change.run);
        let step = change.plan.steps.iter().find(|s| s.id == change.step_id);
        let llm = match step.map(|s| &s.action) {
            Some(Action::Llm(llm)) => Some(llm),
            _ => None,
        };
        let first = self.first_request(store, run.id, change.step_id).await;
        let text = |value: Option<&serde_json::Value>| {
            value.map(|v| match v {
                serde_json::Value::String(s) => st::sha256_hex(s.as_bytes()),
                other => st::sha256_hex(other.to_string().as_bytes()),
            })
        };
        let system = first
            .as_ref()
            .and_then(|(request, _)| text(request.get("system")));
        let prompt = first
            .as_ref()
            .and_then(|(_, added)| text(added.first().and_then(|m| m.get("content"))));
        let tools = first
            .as_ref()
            .and_then(|(request, _)| request.get("tools")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.get("name")?.as_str().map(String::from))
            .collect();
        let attempt = store
            .dashboard_attempts(run.id)
            .await?
            .into_iter()
            .filter(|a| a.step_run_id == row.step_run_id)
            .max_by_key(|a| a.number);
        let model = first
            .as_ref()
            .and_then(|(request, _)| request.get("model")?.as_str().map(String::from))
            .or_else(|| attempt.as_ref().and_then(|a| a.model.clone()))
            .or_else(|| llm.and_then(|l| l.model.clone()));
        let (subject, diff, branch) = match subject {
            Subject::Commit {
                branch,
                commit,
                tree,
                diff,
            } => (
                st::commit_subject(branch, commit, tree),
                Some(st::diff_byproduct(diff)),
                Some(branch.to_owned()),
            ),
            Subject::Text(text) => (st::text_subject(&row.kind, text), None, None),
        };
        let ctx = change.context;
        let trigger = st::Trigger {
            event: run.event.clone(),
            issue: ctx.and_then(|c| c.issue.as_ref()).map(|i| i.number),
            pull_request: ctx.and_then(|c| c.pr.as_ref()).map(|p| p.number),
            comment: ctx.and_then(|c| c.comment.as_ref()).map(|c| c.id),
            summoned_by: match ctx.and_then(|c| c.comment.as_ref()) {
                Some(comment) => Some(comment.author.clone()),
                None => match ctx.and_then(|c| c.issue.as_ref()) {
                    Some(issue) if run.event == "issue" => Some(issue.author.clone()),
                    _ => store.triggerer_of(run.id).await?,
                },
            },
            association: ctx
                .and_then(|c| c.comment.as_ref())
                .map(|c| c.association.clone())
                .filter(|a| !a.is_empty()),
            permission: if run.secrets_allowed {
                "trusted"
            } else {
                "untrusted"
            }
            .into(),
        };
        let mut dependencies = vec![
            ResourceDescriptor {
                name: Some("base".into()),
                uri: Some(format!("git+{}", change.repo.clone_url)),
                digest: BTreeMap::from([("gitCommit".into(), run.sha.clone())]),
                ..ResourceDescriptor::default()
            },
            ResourceDescriptor {
                name: Some("workflow".into()),
                uri: Some(format!(
                    "git+{}@{}#{}",
                    change.repo.clone_url, run.sha, run.workflow_path
                )),
                digest: BTreeMap::from([("gitCommit".into(), run.sha.clone())]),
                ..ResourceDescriptor::default()
            },
        ];
        dependencies.extend(system.map(|hex| ResourceDescriptor::sha256("system-prompt", hex)));
        dependencies.extend(prompt.map(|hex| ResourceDescriptor::sha256("prompt", hex)));
        let mut byproducts: Vec<ResourceDescriptor> = diff.into_iter().collect();
        if let Some(blob) = store
            .latest_blob(run.id, change.step_id, "transcript")
            .await?
        {
            let hex = blob.digest.trim_start_matches("sha256:").to_owned();
            byproducts.push(ResourceDescriptor::sha256("transcript", hex));
        }
        let cost = attempt.as_ref().and_then(|a| a.cost_usd_micros);
        let usage = attempt
            .as_ref()
            .and_then(|a| a.usage.as_deref())
            .and_then(|u| serde_json::from_str::<serde_json::Value>(u).ok());
        byproducts.push(st::usage_byproduct(&serde_json::json!({
            "costUsd": cost.map(|micros| micros as f64 / 1e6),
            "tokens": usage,
        })));
        Ok(Statement {
            statement_type: st::STATEMENT_TYPE.into(),
            subject: vec![subject],
            predicate_type: st::PREDICATE_TYPE.into(),
            predicate: st::Provenance {
                build_definition: st::BuildDefinition {
                    build_type: st::BUILD_TYPE.into(),
                    external_parameters: st::ExternalParameters {
                        repository: change.repo.name.clone(),
                        workflow: st::Workflow {
                            path: run.workflow_path.clone(),
                            git_ref: run.git_ref.clone(),
                            commit: run.sha.clone(),
                        },
                        trigger,
                        step: change.step_id.to_owned(),
                        proposal: st::ProposalFacts {
                            id: row.id,
                            run: run.id,
                            kind: row.kind.clone(),
                            branch,
                            threat_check: threat_check(row),
                        },
                        approval: row.decided_by.as_ref().map(|by| st::Approval {
                            by: by.clone(),
                            at: st::rfc3339(row.decided_at.unwrap_or_default()),
                        }),
                    },
                    internal_parameters: st::InternalParameters {
                        model,
                        max_turns: llm.and_then(|l| l.max_turns),
                        tools,
                        network: step
                            .and_then(|s| s.network.as_ref())
                            .map(serde_json::to_value)
                            .transpose()?
                            .unwrap_or_default(),
                        budgets: st::Budgets {
                            max_tokens: llm.and_then(|l| l.max_tokens),
                            max_cost_usd: llm.and_then(|l| l.max_cost_usd),
                            run_budget_usd: change.plan.budget_usd,
                        },
                    },
                    resolved_dependencies: dependencies,
                },
                run_details: st::RunDetails {
                    builder: st::Builder {
                        id: public_url.trim_end_matches('/').to_owned(),
                        version: BTreeMap::from([(
                            "plue".into(),
                            env!("CARGO_PKG_VERSION").into(),
                        )]),
                    },
                    metadata: st::Metadata {
                        invocation_id: statement_url(public_url, run.id, row.id),
                        started_on: st::rfc3339(run.started_at.unwrap_or(run.created_at)),
                        finished_on: st::rfc3339(now_ms),
                    },
                    byproducts,
                },
            },
        })
    }

    /// The first request of the step's latest transcript (it alone carries `system` and
    /// `tools`) and the messages it added; `None` when there is none to read.
    async fn first_request(
        &self,
        store: &Store,
        run_id: i64,
        step_id: &str,
    ) -> Option<(serde_json::Value, Vec<serde_json::Value>)> {
        let artifacts = self.artifacts.as_ref()?;
        match transcripts::latest(store, artifacts, run_id, step_id).await {
            Ok(Kept::Transcript(transcript)) => transcript
                .turns
                .into_iter()
                .next()
                .map(|turn| (turn.request, turn.messages_added)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(run = run_id, "reading the transcript for provenance: {e:#}");
                None
            }
        }
    }
}

/// The statement's record of `row`'s threat check; `None` when it did not run (a stored
/// assessment that no longer reads is recorded by its verdict alone: `unreadable`).
pub fn threat_check(row: &ProposalRow) -> Option<st::ThreatCheck> {
    let stored = row.threat.as_deref()?;
    let Ok(assessment) = serde_json::from_str::<super::threat::Assessment>(stored) else {
        return Some(st::ThreatCheck {
            verdict: "unreadable".into(),
            ..st::ThreatCheck::default()
        });
    };
    Some(st::ThreatCheck {
        verdict: assessment.verdict.as_str().into(),
        findings: assessment
            .findings
            .iter()
            .map(|f| st::ThreatFinding {
                rule: f.rule.clone(),
                severity: match f.severity {
                    super::threat::Severity::Warning => "warning".into(),
                    super::threat::Severity::Critical => "critical".into(),
                },
                file: f.file.clone(),
                line: f.line,
                reason: f.reason.clone(),
            })
            .collect(),
        review: assessment.review.as_ref().map(|r| st::ThreatReview {
            model: r.model.clone(),
            verdict: r.verdict().as_str().into(),
            error: r.error.clone(),
        }),
    })
}

#[cfg(test)]
mod tests;
