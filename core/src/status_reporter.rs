//! Delivers the commit statuses the store owes to forges (a `pending` when a repository
//! run is created, then `success` / `failure` / `error` when it ends) — for a run an
//! issue or a comment started, the answers on that issue instead ([`plue_forge::answers`]).
//!
//! Invariants: every text posted (a status's description and context, an answer) passed
//! the run's outbound wall ([`crate::outbound_wall`]), made afresh for each report; reports live in the store until the forge accepted them, so an engine
//! restart loses none; a report is leased while being posted so two engines do not post
//! it at once; failures that a retry can fix are retried with doubling backoff (1 s up to
//! 5 min, at most [`MAX_ATTEMPTS`] times), others are abandoned with the forge's answer
//! recorded. A GitHub repository served through the engine's GitHub App gets check runs
//! instead of statuses ([`plue_forge::checks::report`]), from the same reports. The
//! credential is [`ForgeAuth`]'s for [`Use::Report`] (statuses, check runs) or
//! [`Use::Answer`] (a summoned run's answers); each report is one exchange of
//! [`ForgeAuth::renewing`]: an installation token the forge refuses (revoked before its
//! planned refresh) is forgotten — exactly that one, whichever of the two uses it served —
//! and the report is posted again at once with a new one; a new token refused as well
//! abandons the report with the reason.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use plue_forge::answers;
use plue_forge::auth::{ForgeAuth, Use};
use plue_forge::checks::report as check_runs;
use plue_forge::status::{self, CommitStatus, PostError, StatusTarget};
use plue_forge::Forge;
use plue_store::{now_ms, RepoRow, StatusReportRow, Store};

pub const MAX_ATTEMPTS: i64 = 12;
/// How long a claimed report (or proposal, `safe_outputs::apply`) is left to its claimer.
pub const LEASE_MS: i64 = 60_000;
const MAX_BACKOFF_MS: i64 = 300_000;

/// The wait before try `attempts` + 1: 1 s, doubling, at most 5 min.
pub fn backoff_ms(attempts: i64) -> i64 {
    (1000i64 << (attempts - 1).clamp(0, 20)).min(MAX_BACKOFF_MS)
}

#[derive(Clone)]
pub struct StatusReporter {
    pub store: Store,
    /// The repositories' forge credentials.
    pub auth: ForgeAuth,
    /// Built for the first report: building a client reads every certificate of the
    /// system's store (~7 ms of CPU), which an engine that reports nothing (`plue run`)
    /// never needs, least of all while it starts.
    pub client: std::sync::OnceLock<reqwest::Client>,
    /// Base URL of this engine as users reach it, for the status's link.
    pub public_url: String,
    /// The runs' outbound walls.
    pub walls: crate::outbound_wall::Walls,
}

impl StatusReporter {
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::warn!("commit statuses: {e:#}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Posts every due report; returns how many the forge accepted.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let reports = self
            .store
            .claim_status_reports(now_ms(), LEASE_MS, 50)
            .await?;
        let mut delivered = 0;
        for report in reports {
            match self.post(&report).await {
                Ok(()) => {
                    self.store.status_delivered(report.id).await?;
                    delivered += 1;
                }
                Err(PostError::Retry(error)) if report.attempts < MAX_ATTEMPTS => {
                    let backoff = backoff_ms(report.attempts);
                    tracing::debug!(run = report.run_id, "status not delivered: {error}");
                    self.store
                        .status_retry_at(report.id, &error, now_ms() + backoff)
                        .await?;
                }
                Err(error) => {
                    let error = error.into_reason();
                    tracing::warn!(run = report.run_id, "giving up a commit status: {error}");
                    self.store.status_abandoned(report.id, &error).await?;
                }
            }
        }
        Ok(delivered)
    }

    async fn post(&self, report: &StatusReportRow) -> Result<(), PostError> {
        let repo = repo_of(report);
        let summoned = self
            .store
            .summoned_context(report.run_id)
            .await
            .map_err(|e| PostError::Retry(format!("store: {e:#}")))?;
        let use_ = match summoned {
            Some(_) => Use::Answer,
            None => Use::Report,
        };
        self.auth
            .renewing(&repo, || {
                self.post_with(report, &repo, summoned.clone(), use_)
            })
            .await
    }

    async fn post_with(
        &self,
        report: &StatusReportRow,
        repo: &RepoRow,
        summoned: Option<String>,
        use_: Use,
    ) -> Result<(), PostError> {
        let forge = Forge::parse(&report.forge)
            .ok_or_else(|| PostError::Permanent(format!("unknown forge '{}'", report.forge)))?;
        if report.api_url.is_none() && !self.auth.has_credential(repo) {
            return Err(PostError::Permanent(format!(
                "repository {} has no api_token (nor api_url): commit statuses are off",
                report.repo_name
            )));
        }
        let api_url = report
            .api_url
            .clone()
            .or_else(|| forge.default_api_url(&report.clone_url))
            .ok_or_else(|| {
                PostError::Permanent(format!(
                    "repository {} has no api_url to report statuses to",
                    report.repo_name
                ))
            })?;
        let token = self.auth.token(repo, use_).await?;
        let token = token.as_ref().map(|t| t.expose());
        let client = self.client.get_or_init(reqwest::Client::new);
        // A run an issue or a comment started answers there, and its statuses go on the
        // pull requests it opened rather than on the commit it ran at.
        let wall = self
            .walls
            .of_run(report.run_id)
            .await
            .map_err(|e| PostError::Retry(format!("the run's outbound wall: {e:#}")))?;
        let with = answers::Answering {
            store: &self.store,
            client,
            forge,
            api_url: &api_url,
            token,
            public_url: &self.public_url,
            wall: &wall,
        };
        if self.auth.is_app(repo) {
            // Served through the GitHub App: check runs instead of commit statuses, written
            // with the token that may (a summoned run's answers keep theirs).
            let report_token = match use_ {
                Use::Report => None,
                _ => self.auth.token(repo, Use::Report).await?,
            };
            let checking = check_runs::Checking {
                with: &with,
                token: report_token.as_ref().map(|t| t.expose()).or(token),
                app_id: self.auth.app().map(|app| app.id()),
            };
            return check_runs::deliver(&checking, report, summoned.as_deref()).await;
        }
        if let Some(context) = summoned {
            return answers::deliver(&with, report, &context).await;
        }
        answers::statuses_on_opened_pulls(&with, report).await?;
        let target = StatusTarget {
            forge,
            api_url: &api_url,
            token,
            repo: &report.repo_name,
            sha: &report.sha,
        };
        let body = CommitStatus {
            state: report.state,
            // The dashboard's run page: what a person clicking "Details" wants.
            target_url: format!(
                "{}/runs/{}",
                self.public_url.trim_end_matches('/'),
                report.run_id
            ),
            description: wall.redact(&report.description).defused(),
            context: wall
                .redact(&format!("plue/{}", report.workflow_name))
                .defused(),
        };
        status::post(client, &target, &body).await
    }
}

/// The repository a report is for, as [`ForgeAuth`] reads it (its forge, URLs and token;
/// the credentials are cached by name).
fn repo_of(report: &StatusReportRow) -> RepoRow {
    RepoRow {
        id: 0,
        name: report.repo_name.clone(),
        clone_url: report.clone_url.clone(),
        forge: report.forge.clone(),
        webhook_secret: String::new(),
        api_url: report.api_url.clone(),
        api_token: report.api_token.clone(),
        default_branch: None,
        created_at: 0,
        public_read: None,
        forge_repo_id: report.forge_repo_id,
    }
}

#[cfg(test)]
#[path = "status_reporter_tests.rs"]
mod tests;
