//! Answers on the forge for a run that an issue or a comment started: a comment when it
//! starts (linking the run's page) and one when it ends (the pull requests it opened, or
//! why it failed), and the run's commit status on each pull request it opened instead of
//! on the commit it ran at. Any other run's final status goes on the pull requests it
//! opened too ([`statuses_on_opened_pulls`]), besides its own commit.
//!
//! They ride on the commit-status outbox (`status_reporter`): a summoned run's `pending`
//! report becomes the start answer, its final report the end answer. So they are leased,
//! retried and kept across restarts like statuses, and come in order (a run's reports are
//! delivered one after the other).
//!
//! Invariants:
//! - Each answer carries a hidden marker (`<!-- plue:run:{id}:started -->`, `…:ended -->`)
//!   and is looked up before it is posted: a retry, a second engine or a restart never
//!   posts it twice ([`super::writer::Writer::comment`]).
//! - The end answer waits until none of the run's proposals is still to be applied
//!   (`ready`, `applying`, or failed with a retry due), so it can link what they opened.
//! - Every answer passes the run's outbound wall ([`Answering::wall`]) as a whole before
//!   it is posted, and text it repeats that the engine did not write (a run's or a step's
//!   failure, a proposal's refusal) is redacted first and quoted as a code span: no secret
//!   of the run in any spelling, no link but to this engine's dashboard and the forge, no
//!   mention. An answer the wall refuses all the same is replaced by a fixed text.
//! - The end answer of a failed run names each failed step with its reason (a budget that
//!   was reached says which and how much), not only the steps' names.
//! - The end answer says each proposal's threat check verdict when it ran (pass, needs a
//!   writer's approval, refused) and the rules that found something.

use evaluator::EvalContext;
use plue_outbound::{Checker, Outbound};

use super::lookup::{ApiTarget, Found};
use super::status::{self, CommitStatus, PostError, StatusTarget};
use super::writer::Writer;
use super::Forge;
use plue_store::{ProposalRow, StatusReportRow, StepRunRow, Store};
use plue_types::status::{CommitState, ProposalState, StepStatus};

/// The marker of run `run_id`'s start (`started`) or end (`ended`) answer.
pub fn marker(run_id: i64, moment: &str) -> String {
    format!("<!-- plue:run:{run_id}:{moment} -->")
}

/// What the answers need besides the report.
pub struct Answering<'a> {
    pub store: &'a Store,
    pub client: &'a reqwest::Client,
    pub forge: Forge,
    pub api_url: &'a str,
    pub token: Option<&'a str>,
    /// This engine's base URL as users reach it.
    pub public_url: &'a str,
    /// The run's outbound wall: its secrets, and links only to this engine and the forge.
    pub wall: &'a Checker,
}

/// Delivers `report` of a run started by an issue or a comment (`context` is the run's
/// stored context): the answer comment, then (at the end) the status on every pull
/// request the run opened.
pub async fn deliver(
    with: &Answering<'_>,
    report: &StatusReportRow,
    context: &str,
) -> Result<(), PostError> {
    match answer(with, report, context).await? {
        Some(ending) => on_pulls(with, report, &ending.proposals, &run_link(with, report)).await,
        None => Ok(()),
    }
}

/// What a run's end says: its proposals (none still to be applied) and the end text, which
/// passed the run's wall.
pub struct Ending {
    pub proposals: Vec<ProposalRow>,
    pub text: Outbound,
}

/// The answer comment of `report` alone (`context` is the run's stored context); at the
/// end, what it said ([`Ending`]), for the statuses or check runs of the pull requests it
/// opened.
pub async fn answer(
    with: &Answering<'_>,
    report: &StatusReportRow,
    context: &str,
) -> Result<Option<Ending>, PostError> {
    let context: EvalContext = serde_json::from_str(context)
        .map_err(|e| PostError::Permanent(format!("the run's stored context: {e}")))?;
    let issue = context
        .issue
        .as_ref()
        .map(|i| i.number)
        .or_else(|| context.pr.as_ref().map(|p| p.number))
        .ok_or_else(|| PostError::Permanent("the run names no issue to answer on".into()))?;
    let writer = Writer {
        client: with.client,
        forge: with.forge,
        api_url: with.api_url,
        token: with.token,
        repo: &report.repo_name,
    };
    let link = run_link(with, report);
    if report.state == CommitState::Pending {
        let body = format!(
            "Plue is on it: run [#{}]({link}) of {} started.",
            report.run_id,
            with.wall.redact(&report.workflow_name).code_span()
        );
        let body = through_wall(with.wall, &body, report, &link);
        writer
            .comment(issue, &body, &marker(report.run_id, "started"))
            .await?;
        return Ok(None);
    }
    let ending = ending(with, report).await?;
    writer
        .comment(issue, &ending.text, &marker(report.run_id, "ended"))
        .await?;
    Ok(Some(ending))
}

/// The end of `report`'s run, once its proposals are settled (until then a retry): the
/// end answer's text — why it failed, step by step, and what it opened.
pub async fn ending(with: &Answering<'_>, report: &StatusReportRow) -> Result<Ending, PostError> {
    let link = run_link(with, report);
    let proposals = settled_proposals(with, report).await?;
    let reason = with
        .store
        .run(report.run_id)
        .await
        .map_err(store_error)?
        .and_then(|run| run.reason);
    let failed: Vec<StepRunRow> = if report.state == CommitState::Success {
        Vec::new()
    } else {
        with.store
            .step_runs(report.run_id)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|s| s.status == StepStatus::Failed)
            .collect()
    };
    let text = end_text(
        with.wall,
        report,
        reason.as_deref(),
        &failed,
        &proposals,
        &link,
    );
    let text = through_wall(with.wall, &text, report, &link);
    Ok(Ending { proposals, text })
}

/// The final `report` of a run that no issue started, on the pull requests it opened (its
/// own commit gets it from the caller): once the run's proposals are settled.
pub async fn statuses_on_opened_pulls(
    with: &Answering<'_>,
    report: &StatusReportRow,
) -> Result<(), PostError> {
    if report.state == CommitState::Pending {
        return Ok(());
    }
    let proposals = settled_proposals(with, report).await?;
    on_pulls(with, report, &proposals, &run_link(with, report)).await
}

/// The dashboard's page of the `report`'s run.
pub fn run_link(with: &Answering<'_>, report: &StatusReportRow) -> String {
    format!(
        "{}/runs/{}",
        with.public_url.trim_end_matches('/'),
        report.run_id
    )
}

/// The proposals of the `report`'s run, once none waits to be applied (until then a
/// retry: the answer names what they opened).
pub async fn settled_proposals(
    with: &Answering<'_>,
    report: &StatusReportRow,
) -> Result<Vec<ProposalRow>, PostError> {
    if with
        .store
        .proposals_unsettled(report.run_id)
        .await
        .map_err(store_error)?
    {
        return Err(PostError::Retry(
            "waiting for the run's proposals to be applied".into(),
        ));
    }
    with.store
        .list_for_run(report.run_id)
        .await
        .map_err(store_error)
}

/// A store failure while answering: tried again later.
fn store_error(e: anyhow::Error) -> PostError {
    PostError::Retry(format!("store: {e:#}"))
}

async fn on_pulls(
    with: &Answering<'_>,
    report: &StatusReportRow,
    proposals: &[ProposalRow],
    link: &str,
) -> Result<(), PostError> {
    for pull in opened_pulls(proposals) {
        post_status_on_pull(with, report, pull, link).await?;
    }
    Ok(())
}

/// `text` through the run's wall; a fixed text naming the run when the wall refuses it
/// (the engine's own words and quotes are made to pass: a refusal here is a defect, logged).
fn through_wall(wall: &Checker, text: &str, report: &StatusReportRow, link: &str) -> Outbound {
    match wall.check(text) {
        Ok(checked) => checked,
        Err(refusal) => {
            tracing::error!(
                run = report.run_id,
                "an answer did not pass the outbound wall: {refusal}"
            );
            wall.check(&format!(
                "Plue run [#{}]({link}): see the run's page.",
                report.run_id
            ))
            .unwrap_or_else(|_| {
                wall.redact(&format!("Plue run #{}", report.run_id))
                    .defused()
            })
        }
    }
}

/// At most this many failed steps are named in an end answer.
const MAX_FAILED_NAMED: usize = 10;

/// The end answer's text: every piece the engine did not write redacted and quoted.
fn end_text(
    wall: &Checker,
    report: &StatusReportRow,
    reason: Option<&str>,
    failed: &[StepRunRow],
    proposals: &[ProposalRow],
    link: &str,
) -> String {
    let verdict = match report.state {
        CommitState::Success => "finished",
        CommitState::Failure => "failed",
        CommitState::Pending | CommitState::Error => "ended with an error",
    };
    let mut text = format!(
        "Plue run [#{}]({link}) of {} {verdict}.",
        report.run_id,
        wall.redact(&report.workflow_name).code_span()
    );
    let mut listed = false;
    let mut line = |text: &mut String, line: String| {
        if !listed {
            // A blank line: a list right after a paragraph is not one in Markdown.
            text.push('\n');
            listed = true;
        }
        text.push_str(&format!("\n- {line}"));
    };
    if report.state != CommitState::Success {
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            text.push_str(&format!("\n\nWhy: {}", quote(wall, reason)));
        }
        for step in failed.iter().take(MAX_FAILED_NAMED) {
            let why = step.reason.as_deref().filter(|r| !r.is_empty());
            line(
                &mut text,
                format!(
                    "Step {} failed: {}",
                    wall.redact(&step.step_id).code_span(),
                    quote(wall, why.unwrap_or("no reason recorded"))
                ),
            );
        }
        if failed.len() > MAX_FAILED_NAMED {
            line(
                &mut text,
                format!(
                    "… and {} more failed steps on [the run]({link}).",
                    failed.len() - MAX_FAILED_NAMED
                ),
            );
        }
    }
    for proposal in proposals {
        let what = proposal.kind.replace('_', " ");
        let threat = threat_note(wall, proposal);
        let shown = match (proposal.state, &proposal.applied_url) {
            (ProposalState::Applied, Some(url)) if proposal.kind == "pull_request" => {
                format!("Opened the pull request {}", wall.redact(url))
            }
            (ProposalState::Applied, Some(url)) => {
                format!("Applied the {what}: {}", wall.redact(url))
            }
            (ProposalState::Refused, _) | (ProposalState::Failed, _) => format!(
                "The {what} was not applied: {}",
                quote(
                    wall,
                    proposal.reason.as_deref().unwrap_or("no reason recorded")
                )
            ),
            (ProposalState::Waiting, _) => {
                format!("The {what} waits for a person's approval on [the run]({link}).")
            }
            (ProposalState::Rejected, _) => format!("The {what} was rejected by a reviewer."),
            // Not settled yet (`ready`, `applying`), or applied without a link: nothing
            // to say.
            (ProposalState::Ready | ProposalState::Applying | ProposalState::Applied, _) => {
                continue
            }
        };
        line(&mut text, format!("{shown}{threat}"));
    }
    text
}

/// What the end answer says of `proposal`'s threat check, when it ran: its verdict and the
/// rules that found something (ids the engine wrote, quoted all the same), as a suffix.
fn threat_note(wall: &Checker, proposal: &ProposalRow) -> String {
    let Some(threat) = proposal
        .threat
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
    else {
        return String::new();
    };
    let verdict = match threat["verdict"].as_str() {
        Some("pass") => "pass",
        Some("needs_approval") => "needs a writer's approval",
        Some("refused") => "refused",
        _ => return String::new(),
    };
    let mut rules: Vec<String> = Vec::new();
    for finding in threat["findings"].as_array().into_iter().flatten() {
        if let Some(rule) = finding["rule"].as_str() {
            if !rules.iter().any(|r| r == rule) && rules.len() < 6 {
                rules.push(rule.to_owned());
            }
        }
    }
    let review = match threat["review"]["model"].as_str() {
        Some(_) => ", model review included",
        None => "",
    };
    if rules.is_empty() {
        return format!(" (threat check: {verdict}{review})");
    }
    format!(
        " (threat check: {verdict}{review}: {})",
        quote(wall, &rules.join(", "))
    )
}

/// Text the engine did not write, as an answer quotes it: redacted by the run's wall, at
/// most 1,000 characters, as a code span on one line (no link, mention or markup renders).
fn quote(wall: &Checker, text: &str) -> Outbound {
    let text: String = text.chars().take(1000).collect();
    wall.redact(&text).code_span()
}

/// The pull requests among `proposals` that were opened.
pub fn opened_pulls(proposals: &[ProposalRow]) -> impl Iterator<Item = &ProposalRow> {
    proposals
        .iter()
        .filter(|p| p.kind == "pull_request" && p.state == ProposalState::Applied)
}

/// The head commit of the pull request `pull` opened; `None` when it is gone (or its link
/// names no number).
pub async fn pull_head(
    with: &Answering<'_>,
    report: &StatusReportRow,
    pull: &ProposalRow,
) -> Result<Option<String>, PostError> {
    let Some(number) = pull
        .applied_url
        .as_deref()
        .and_then(|url| url.rsplit('/').next())
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let target = ApiTarget {
        forge: with.forge,
        api_url: with.api_url.to_string(),
        token: with.token.map(|t| crate::auth::Token::new(t.to_string())),
        repo: report.repo_name.clone(),
    };
    match target.pull_request(with.client, number).await {
        Ok(Found::Yes(refs)) => Ok(Some(refs.head.sha)),
        Ok(Found::NotFound) => Ok(None),
        Err(e) => Err(PostError::of_lookup(e)),
    }
}

/// The report's status on the head of the pull request `pull` opened.
async fn post_status_on_pull(
    with: &Answering<'_>,
    report: &StatusReportRow,
    pull: &ProposalRow,
    link: &str,
) -> Result<(), PostError> {
    let Some(head) = pull_head(with, report, pull).await? else {
        return Ok(());
    };
    status::post(
        with.client,
        &StatusTarget {
            forge: with.forge,
            api_url: with.api_url,
            token: with.token,
            repo: &report.repo_name,
            sha: &head,
        },
        &CommitStatus {
            state: report.state,
            target_url: link.to_string(),
            description: with.wall.redact(&report.description).defused(),
            context: with
                .wall
                .redact(&format!("plue/{}", report.workflow_name))
                .defused(),
        },
    )
    .await
}

#[cfg(test)]
mod tests;
