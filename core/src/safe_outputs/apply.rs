//! The safe-output outbox: applies `ready` proposals to the forge with the repository's
//! credentials (the step and its runner never held them). A background task started by
//! `server.rs` beside the commit-status reporter, leased and backed off like it.
//!
//! What each kind becomes:
//! - pull request: one commit = the run's commit + the proposal's diff, built in the
//!   engine's bare mirror of the repository with a private index (`read-tree`, `apply
//!   --cached`, `write-tree`, `commit-tree` with fixed dates, so every retry builds the same
//!   commit), pushed to `{branch_prefix}run-{run}-{step}` — or, for a run a comment
//!   summoned, `{branch_prefix}comment-{comment id}-{step}`, so a re-delivered comment's
//!   second run finds the first one's pull request instead of opening another — then the
//!   pull request into the run's branch;
//! - comment and labels: on the run's issue (or pull request);
//! - issue: a new issue.
//!
//! Invariants:
//! - Idempotent across retries, re-deliveries and an engine restart: the branch and the
//!   commit are deterministic, an existing pull request for the branch is found and used,
//!   comments and issues carry `<!-- plue:proposal:{id} -->` (for a comment's run
//!   `<!-- plue:proposal:comment-{id}-{step}-{position} -->`) and are looked up before any
//!   post ([`plue_forge::writer`]).
//! - Proposals of one run are applied in order: one waits while an earlier one of its run
//!   is not settled.
//! - What the built commit changes (`git diff-tree -r --no-renames`, both sides of a
//!   rename, with modes) is checked again by the validator's path and mode rules before
//!   any push: a diff `git apply` reads otherwise than the validator lands nothing denied.
//!   Every file it adds or modifies is judged again by its whole new content
//!   ([`contents`], [`validate::check_new_file`]): no secret of the run in any encoding
//!   from any byte, no NUL (binary), before any push.
//! - Every text written — the pull request's title, body and branch, the commit message, a
//!   comment, an issue, a label — passes the run's outbound wall again here
//!   ([`crate::outbound_wall`]: every secret of the run, links only to the forge, this
//!   engine and the step's `allow_links`), so what was stored and what is written are
//!   checked by the same rules; an error kept for readers is redacted by it.
//! - A pull request opened after its run ended (its proposal waited for a person) gets the
//!   run's final status on the commit it opened with.
//! - The forge token reaches git only through `GIT_CONFIG_*` environment variables
//!   (`http.extraHeader`), never argv or a URL; errors never hold it.
//! - A run treated like a fork's (no secrets: a stranger summoned it) writes nothing
//!   unless a person approved the proposal (`decided_by`).
//! - A claimed proposal is `applying` with a lease (`retry_at`): an engine that dies
//!   mid-apply leaves it to be taken again when the lease ends.
//! - With an [`Attestor`], nothing is written before its signed provenance statement is
//!   recorded ([`attest`]); the pull request's body and its commit's `Plue-Provenance:`
//!   trailer link to it (by the proposal's id, so the commit stays deterministic).
//! - A statement is recorded `pending` and is `applied` only once the whole write was
//!   accepted — a pull request's push *and* the pull request, a comment, the labels, an
//!   issue — settled with the proposal by [`Store::mark_applied`]; a write that fails for
//!   good (a refused push or pull request, a text the wall refuses after the push, too many
//!   tries) fails it with the proposal's reason, redacted by the run's wall like every
//!   error kept here ([`Store::mark_failed`]). A push the forge refused (`! [remote
//!   rejected]`) is final; one that got no answer is retried.
//!
//! Why one file past ~600 lines (a twelfth of them this doc): the outbox's loop and its
//! one `apply`, whose four kinds share one job, one writer, one wall and one attestation;
//! the commit's git plumbing (`commit.rs`), the files read back (`contents.rs`) and the
//! tests are beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use evaluator::plan::{Action, Plan};
use evaluator::safe_outputs::SafeOutputs;
use evaluator::EvalContext;
use plue_forge::status::{self, CommitStatus, PostError, StatusTarget};
use plue_forge::writer::{NewPull, Writer};
use plue_forge::Forge;
use plue_outbound::{Checker, Outbound};
use plue_store::{now_ms, ProposalRow, RepoRow, RunRow, Store};
use plue_types::protocol::Proposal;
use plue_vault::Vault;
use tokio_util::sync::CancellationToken;

use crate::outbound_wall::Walls;
use crate::registry::git::{self, Mirror};
use crate::safe_outputs::attest::{self, Attestor, Change, Subject};
use crate::safe_outputs::validate;
use crate::status_reporter::{backoff_ms, LEASE_MS, MAX_ATTEMPTS};

mod commit;
pub mod contents;

#[cfg(test)]
use commit::GIT_TIMEOUT;
pub use commit::{build_commit, changes, push, tree_of};

/// The hidden marker of proposal `id`'s comment or issue.
pub fn marker(id: i64) -> String {
    format!("<!-- plue:proposal:{id} -->")
}

/// The branch of run `run_id`'s step `step_id`'s pull request.
pub fn branch_name(prefix: &str, run_id: i64, step_id: &str) -> String {
    format!("{prefix}run-{run_id}-{step_id}")
}

/// The outbox task's state.
pub struct Applier {
    pub store: Store,
    pub vault: Vault,
    /// Where the repositories' bare mirrors live (`{mirrors_dir}/{repo_id}.git`).
    pub mirrors_dir: PathBuf,
    /// Built for the first proposal (see `StatusReporter::client`).
    pub client: std::sync::OnceLock<reqwest::Client>,
    /// The runs' outbound walls (and this engine's base URL, for the link in a pull
    /// request).
    pub walls: Walls,
    /// Failed tries per proposal since this engine started, for the backoff.
    pub tries: Mutex<HashMap<i64, i64>>,
    /// Signs each change's provenance statement before it is written ([`attest`]); with
    /// none, changes are written unattested and their pull requests link to no statement.
    pub attestor: Option<Attestor>,
}

/// Everything one proposal's application needs.
struct Job {
    row: ProposalRow,
    proposal: Proposal,
    run: RunRow,
    repo: RepoRow,
    step_id: String,
    plan: Plan,
    context: Option<EvalContext>,
}

impl Applier {
    pub fn new(store: Store, vault: Vault, mirrors_dir: PathBuf, walls: Walls) -> Applier {
        Applier {
            store,
            vault,
            mirrors_dir,
            client: std::sync::OnceLock::new(),
            walls,
            tries: Mutex::new(HashMap::new()),
            attestor: None,
        }
    }

    /// This applier, signing every change's provenance with `attestor`.
    pub fn with_attestor(mut self, attestor: Attestor) -> Applier {
        self.attestor = Some(attestor);
        self
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.apply_due().await {
                tracing::warn!("safe outputs: {e:#}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Applies every due proposal; returns how many were applied.
    pub async fn apply_due(&self) -> anyhow::Result<usize> {
        let mut applied = 0;
        for id in self.store.claim_proposals(now_ms(), LEASE_MS, 20).await? {
            let Some(row) = self.store.proposal(id).await? else {
                continue;
            };
            let outcome = match self.job(row.clone()).await {
                // One exchange: a token the forge refuses (an API call's or the push's) is
                // forgotten and the proposal applied again at once with a new one.
                Ok(job) => {
                    self.walls
                        .forge_auth()
                        .renewing(&job.repo, || self.apply(&job))
                        .await
                }
                Err(e) => Err(e),
            };
            // Errors are kept for the run's readers: through the run's wall.
            let outcome = match outcome {
                Err(PostError::Retry(e)) => {
                    Err(PostError::Retry(self.redacted(row.run_id, &e).await))
                }
                Err(PostError::Moved(e)) => {
                    Err(PostError::Moved(self.redacted(row.run_id, &e).await))
                }
                // Final: `renewing` made any refusal it did not renew a permanent error.
                Err(e) => Err(PostError::Permanent(
                    self.redacted(row.run_id, &e.into_reason()).await,
                )),
                ok => ok,
            };
            match outcome {
                Ok(url) => {
                    self.tries_of(id, None);
                    self.store.mark_applied(id, &url).await?;
                    tracing::info!(run = row.run_id, proposal = id, "applied: {url}");
                    applied += 1;
                }
                Err(PostError::Retry(error)) if self.tries_of(id, Some(1)) < MAX_ATTEMPTS => {
                    let tries = self.tries_of(id, Some(0));
                    tracing::debug!(run = row.run_id, proposal = id, "not applied yet: {error}");
                    self.store
                        .mark_failed(id, &error, Some(now_ms() + backoff_ms(tries)))
                        .await?;
                }
                Err(error) => {
                    let error = error.into_reason();
                    self.tries_of(id, None);
                    tracing::warn!(run = row.run_id, proposal = id, "not applied: {error}");
                    self.store.mark_failed(id, &error, None).await?;
                }
            }
        }
        Ok(applied)
    }

    /// `text` redacted by run `run_id`'s wall; a fixed text when the wall cannot be made.
    async fn redacted(&self, run_id: i64, text: &str) -> String {
        match self.walls.of_run(run_id).await {
            Ok(wall) => wall.redact(text).into_string(),
            Err(e) => {
                tracing::warn!(run = run_id, "the run's outbound wall: {e:#}");
                "not applied (the reason is withheld: the run's secrets could not be read)".into()
            }
        }
    }

    /// Adds `add` to proposal `id`'s tries (`None`: forgets them); returns the count.
    fn tries_of(&self, id: i64, add: Option<i64>) -> i64 {
        let mut tries = self.tries.lock().unwrap_or_else(|p| p.into_inner());
        match add {
            None => {
                tries.remove(&id);
                0
            }
            Some(add) => {
                let count = tries.entry(id).or_insert(0);
                *count += add;
                *count
            }
        }
    }

    async fn job(&self, row: ProposalRow) -> Result<Job, PostError> {
        let lost = |what: &str| PostError::Permanent(format!("{what} of the proposal is gone"));
        let store_error = |e: anyhow::Error| PostError::Retry(format!("store: {e:#}"));
        let run = self
            .store
            .run(row.run_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| lost("the run"))?;
        // A run treated like a fork's (a stranger summoned it, `others="untrusted"`) holds
        // no secret; it does not get the forge's write token's power either, unless a
        // person approved the proposal.
        if !run.secrets_allowed && row.decided_by.is_none() {
            return Err(PostError::Permanent(
                "the run was treated like a fork's (its author may not write): its proposals \
                 are applied only once a person approves them"
                    .into(),
            ));
        }
        let proposal: Proposal = serde_json::from_str(&row.payload)
            .map_err(|e| PostError::Permanent(format!("stored proposal: {e}")))?;
        let repo_id = run.repo_id.ok_or_else(|| {
            PostError::Permanent("the run belongs to no repository: nothing to write to".into())
        })?;
        let repo = self
            .store
            .repo_by_id(repo_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| lost("the repository"))?;
        let documents = self
            .store
            .run_documents(row.run_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| lost("the run"))?;
        let plan: Plan = serde_json::from_str(&documents.plan)
            .map_err(|e| PostError::Permanent(format!("stored plan: {e}")))?;
        let context = serde_json::from_str(&documents.context).ok();
        let step_id = self
            .store
            .step_id_of(row.step_run_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| lost("the step"))?;
        Ok(Job {
            row,
            proposal,
            run,
            repo,
            step_id,
            plan,
            context,
        })
    }

    /// Applies one proposal; returns what to show as its link.
    async fn apply(&self, job: &Job) -> Result<String, PostError> {
        let forge = Forge::parse(&job.repo.forge)
            .ok_or_else(|| PostError::Permanent(format!("unknown forge '{}'", job.repo.forge)))?;
        let api_url = job
            .repo
            .api_url
            .clone()
            .or_else(|| forge.default_api_url(&job.repo.clone_url))
            .ok_or_else(|| {
                PostError::Permanent(format!(
                    "repository {} has no api_url to write to",
                    job.repo.name
                ))
            })?;
        // The repository's personal token, or the GitHub App's installation token for
        // writing (the walls made below know it: a text repeating it is refused).
        let token = self
            .walls
            .forge_auth()
            .token(&job.repo, plue_forge::auth::Use::Write)
            .await?
            .ok_or_else(|| {
                PostError::Permanent(format!(
                    "repository {} has no api_token (nor is the engine its GitHub App): the engine cannot write to its forge",
                    job.repo.name
                ))
            })?
            .expose()
            .to_string();
        let client = self.client.get_or_init(reqwest::Client::new);
        let safe_outputs = self.safe_outputs(job);
        let wall = self
            .walls
            .of_run(job.run.id)
            .await
            .map_err(|e| PostError::Retry(format!("the run's outbound wall: {e:#}")))?
            .allowing(&safe_outputs.allow_links);
        let checked = |what: &str, text: &str| -> Result<Outbound, PostError> {
            wall.check(text)
                .map_err(|refusal| PostError::Permanent(format!("{what} {refusal}")))
        };
        let writer = Writer {
            client,
            forge,
            api_url: &api_url,
            token: Some(&token),
            repo: &job.repo.name,
        };
        let marker = match origin(job) {
            Some(origin) => format!(
                "<!-- plue:proposal:{origin}-{}-{} -->",
                job.step_id, job.row.position
            ),
            None => marker(job.row.id),
        };
        match &job.proposal {
            Proposal::PullRequest { title, body, diff } => {
                let title = checked("the pull request's title", title)?;
                let prefix = safe_outputs.branch_prefix.clone();
                let branch = match origin(job) {
                    Some(origin) => format!("{prefix}{origin}-{}", job.step_id),
                    None => branch_name(&prefix, job.run.id, &job.step_id),
                };
                git::check_ref(&branch).map_err(|e| {
                    PostError::Permanent(format!("branch '{branch}' is not a valid name: {e:#}"))
                })?;
                let branch = checked("the branch's name", &branch)?;
                let base = job
                    .run
                    .git_ref
                    .strip_prefix("refs/heads/")
                    .map(String::from)
                    .or_else(|| job.repo.default_branch.clone())
                    .ok_or_else(|| {
                        PostError::Permanent(format!(
                            "the run's ref {} is not a branch to open a pull request into",
                            job.run.git_ref
                        ))
                    })?;
                // Opened already (by an earlier try, or by the run of an earlier delivery
                // of the same comment): nothing to push or open.
                if let Some(open) = writer.find_pull_request(branch.as_str(), &base).await? {
                    return Ok(open.html_url);
                }
                // A GitHub App's repository is fetched with its read-only token (renewed
                // by the mirror when the forge refuses it).
                let mirror = Mirror::open(self.mirrors_dir.join(format!("{}.git", job.repo.id)))
                    .await
                    .map_err(|e| PostError::Retry(format!("{e:#}")))?
                    .with_forge_credential(self.walls.forge_auth(), &job.repo);
                mirror
                    .fetch(&job.repo.clone_url, &[&job.run.sha])
                    .await
                    .map_err(|e| PostError::Retry(format!("{e:#}")))?;
                let diff = validate::check_diff_wall(diff, &wall)
                    .map_err(|refused| PostError::Permanent(refused.to_string()))?;
                // The trailer links the statement by the proposal's id: the commit's own id
                // depends on its message.
                let statement = self.statement_url(job);
                let message = match &statement {
                    Some(url) => checked(
                        "the commit message",
                        &format!("{}\n\nPlue-Provenance: {url}", title.as_str().trim()),
                    )?,
                    None => title.clone(),
                };
                let commit = build_commit(
                    &mirror,
                    &job.run.sha,
                    diff.as_str().as_bytes(),
                    &message,
                    job.row.created_at,
                )
                .await
                .map_err(|e| {
                    PostError::Permanent(format!(
                        "the diff does not apply to {}: {e:#}",
                        job.run.sha
                    ))
                })?;
                // The validator read the diff; this is what `git apply` made of it.
                let changed = changes(&mirror, &job.run.sha, &commit)
                    .await
                    .map_err(|e| PostError::Retry(format!("{e:#}")))?;
                validate::check_changes(&changed, &safe_outputs)
                    .map_err(|e| PostError::Permanent(e.to_string()))?;
                // Each file by its whole new content, modified ones too.
                let max = validate::MAX_JUDGED_FILE_BYTES;
                for file in contents::new_files(&mirror, &job.run.sha, &commit, max)
                    .await
                    .map_err(|e| PostError::Retry(format!("{e:#}")))?
                {
                    validate::check_new_file(&file.path, file.size, file.content.as_deref(), &wall)
                        .map_err(|e| PostError::Permanent(e.to_string()))?;
                }
                let tree = tree_of(&mirror, &commit)
                    .await
                    .map_err(|e| PostError::Retry(format!("{e:#}")))?;
                self.attest(
                    job,
                    Subject::Commit {
                        branch: branch.as_str(),
                        commit: &commit,
                        tree: &tree,
                        diff: diff.as_str().as_bytes(),
                    },
                )
                .await?;
                push(
                    &mirror,
                    &job.repo.clone_url,
                    &commit,
                    branch.as_str(),
                    &token,
                )
                .await?;
                let link = self.run_link(job);
                let provenance = statement
                    .map(|url| format!(" [Signed provenance]({url})."))
                    .unwrap_or_default();
                let body = checked(
                    "the pull request's body",
                    &plue_forge::writer::with_marker(
                        &format!(
                            "{}\n\n---\nProposed by step {} of [Plue run {}]({link}).{provenance}",
                            body.trim_end(),
                            wall.redact(&job.step_id).code_span(),
                            job.run.id
                        ),
                        &marker,
                    ),
                )?;
                let opened = writer
                    .open_pull_request(&NewPull {
                        title: &title,
                        body: &body,
                        head: &branch,
                        base: &base,
                    })
                    .await?;
                let auth = self.walls.forge_auth();
                let posted = auth
                    .renewing(&job.repo, || async {
                        let token = auth.token(&job.repo, plue_forge::auth::Use::Write).await?;
                        let token = token.as_ref().map(|t| t.expose());
                        self.final_status_on(job, &wall, &api_url, token, forge, &commit)
                            .await
                    })
                    .await;
                if let Err(e) = posted {
                    tracing::warn!(
                        run = job.run.id,
                        "the run's status on the pull request it opened: {e}"
                    );
                }
                Ok(opened.html_url)
            }
            Proposal::Comment { body } => {
                let issue = self.target_issue(job)?;
                let body = checked("the comment", body)?;
                self.attest(job, Subject::Text(body.as_str().trim_end()))
                    .await?;
                Ok(writer.comment(issue, &body, &marker).await?.html_url)
            }
            Proposal::Labels { labels } => {
                let issue = self.target_issue(job)?;
                let labels = labels
                    .iter()
                    .map(|label| checked("a label", label))
                    .collect::<Result<Vec<_>, _>>()?;
                let listed: String = labels.iter().map(|l| format!("{}\n", l.as_str())).collect();
                self.attest(job, Subject::Text(&listed)).await?;
                writer.add_labels(issue, &labels).await?;
                let url = job
                    .context
                    .as_ref()
                    .and_then(|c| c.issue.as_ref())
                    .map(|i| i.url.clone())
                    .unwrap_or_default();
                Ok(if url.is_empty() {
                    format!("#{issue}")
                } else {
                    url
                })
            }
            Proposal::Issue { title, body } => {
                let title = checked("the issue's title", title)?;
                let body = checked("the issue's body", body)?;
                self.attest(job, Subject::Text(body.as_str().trim_end()))
                    .await?;
                Ok(writer.open_issue(&title, &body, &marker).await?.html_url)
            }
        }
    }

    /// Where the job's provenance statement is served, when this applier signs them.
    fn statement_url(&self, job: &Job) -> Option<String> {
        self.attestor
            .as_ref()
            .map(|_| attest::statement_url(self.walls.public_url(), job.run.id, job.row.id))
    }

    /// Signs and records the job's statement, before its change is written.
    async fn attest(&self, job: &Job, subject: Subject<'_>) -> Result<(), PostError> {
        let Some(attestor) = &self.attestor else {
            return Ok(());
        };
        let change = Change {
            row: &job.row,
            run: &job.run,
            repo: &job.repo,
            step_id: &job.step_id,
            plan: &job.plan,
            context: job.context.as_ref(),
        };
        attestor
            .attest(
                &self.store,
                self.walls.public_url(),
                &change,
                subject,
                now_ms(),
            )
            .await
            .map(|_| ())
            .map_err(|e| PostError::Retry(format!("{e:#}")))
    }

    /// The dashboard's page of the job's run.
    fn run_link(&self, job: &Job) -> String {
        format!(
            "{}/runs/{}",
            self.walls.public_url().trim_end_matches('/'),
            job.run.id
        )
    }

    /// The final status of the job's run on `commit`, the head of the pull request it just
    /// opened, if the run has ended (a proposal a person approved after the run's end):
    /// the run's own final report went out before this pull request existed.
    async fn final_status_on(
        &self,
        job: &Job,
        wall: &Checker,
        api_url: &str,
        token: Option<&str>,
        forge: Forge,
        commit: &str,
    ) -> Result<(), PostError> {
        let run = self
            .store
            .run(job.run.id)
            .await
            .map_err(|e| PostError::Retry(format!("store: {e:#}")))?;
        let Some(run) = run else {
            return Ok(());
        };
        let Some(ended) = run.status.outcome() else {
            return Ok(());
        };
        let (state, description) = ended.commit_status(run.reason.as_deref());
        let workflow = &run.workflow_name;
        let client = self.client.get_or_init(reqwest::Client::new);
        status::post(
            client,
            &StatusTarget {
                forge,
                api_url,
                token,
                repo: &job.repo.name,
                sha: commit,
            },
            &CommitStatus {
                state,
                target_url: self.run_link(job),
                description: wall.redact(&description).defused(),
                context: wall.redact(&format!("plue/{workflow}")).defused(),
            },
        )
        .await
    }

    /// The step's `SafeOutputs` (the defaults, which still deny every default path, when
    /// the plan no longer says).
    fn safe_outputs(&self, job: &Job) -> SafeOutputs {
        job.plan
            .steps
            .iter()
            .find(|step| step.id == job.step_id)
            .and_then(|step| match &step.action {
                Action::Llm(llm) => llm.safe_outputs.as_deref().cloned(),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The issue (or pull request) a comment or labels go to: the run's.
    fn target_issue(&self, job: &Job) -> Result<u64, PostError> {
        let context = job.context.as_ref();
        context
            .and_then(|c| c.issue.as_ref().map(|i| i.number))
            .or_else(|| context.and_then(|c| c.pr.as_ref().map(|p| p.number)))
            .ok_or_else(|| {
                PostError::Permanent(
                    "the run was started by no issue or pull request to write on".into(),
                )
            })
    }
}

/// What a run summoned by a comment is keyed by, so that every run of a re-delivered
/// comment writes to the same branch and under the same markers (`comment-{id}`); `None`
/// for other runs, whose own id keys them.
fn origin(job: &Job) -> Option<String> {
    job.context
        .as_ref()
        .and_then(|c| c.comment.as_ref())
        .map(|comment| format!("comment-{}", comment.id))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod refusal_tests;
