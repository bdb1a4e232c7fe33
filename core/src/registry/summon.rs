//! Issue and comment events: which workflows they summon, at which commit, and for whom.
//!
//! Invariants:
//! - The workflow files are read at a commit of the repository's own branches, never at a
//!   head a stranger controls: an issue, or a comment on an issue, evaluates at the head of
//!   the default branch; a comment on a pull request at the pull request's **base** sha
//!   (asked of the forge's API, `GET /repos/{o}/{r}/pulls/{n}`, since the comment's payload
//!   names no commit; a repository with no API configured evaluates at its default
//!   branch's head, with `ctx.pr.base` that branch and `ctx.pr.head` empty). The steps'
//!   workspace is that same commit.
//! - A run starts only when a matching trigger's `authors=` is met by whoever caused the
//!   event ([`plue_forge::permission`]): the commenter for a comment; the `sender` for an
//!   issue event (who opened the issue, who added the label — not the issue's author, who
//!   did not ask for this run). Anyone else starts nothing (a log line at info and a
//!   `refused` line in the delivery's answer), or, where a matching trigger says
//!   `others="untrusted"`, a run with `secrets_allowed` false: no secrets, no environment,
//!   only runners that accept forks — the fork machinery. A standing that could not be
//!   learnt (the forge's permission lookup failed, its refused token renewed once and
//!   refused again, the store failed) is never "holds none": the delivery fails with the
//!   reason and its once-key below is forgotten, so the forge's redelivery summons.
//! - The engine's own writing never summons: a comment carrying the hidden marker
//!   `<!-- plue:` (every comment the engine posts has one), an issue opened with it, and
//!   any event a forge marks as sent by a bot (GitHub's `type: "Bot"`) unless that login
//!   is linked to a Plue user, and any event caused by the login the repository's forge
//!   token writes as (a label the engine added for a proposal — Gitea marks no bots, and
//!   its label events name no label, so any label change re-matches), start nothing — no
//!   loop between a run's answer or output and a trigger.
//! - What the engine itself pushes, opens or labels (the branch and pull request of an
//!   agent's proposal, pushed by the token's account; a label it adds to a person's pull
//!   request) gets runs without secrets, like a fork's (`super::cause`, the one decision
//!   of who caused an event, used by `on_push`, `on_pull_request` and here).
//! - An engine that cannot learn which account its token writes as
//!   ([`EngineIdentity::Unknown`]: `GET /user` failed — a GitHub App's token always gets
//!   403 — and its marker and the bot flag are then all it could tell its own writing by)
//!   trusts nothing that might be its own, and on that repository anything might: every
//!   push and pull request runs like a fork's (no secrets, no environment, fork-accepting
//!   runners), whoever the payload names, and no issue or comment event summons a run at
//!   all — not even an untrusted one (`others="untrusted"`), since the engine's own label
//!   or comment would start one, and a writer's comment waits until the forge says who
//!   the engine is (the delivery's answer and the log say why; `GET /api/forges` shows
//!   it). A repository without a token ([`EngineIdentity::NoToken`]) holds nothing the
//!   engine wrote.
//! - A comment's `created` and an issue's `opened` summon once: keyed by repository and
//!   comment id (issue number) beside the deliveries, so the same comment delivered again
//!   under a new delivery id starts no second run (it answers with the first's runs).
//! - A workflow file that does not evaluate at that commit starts no failed run here (the
//!   push that put it there got one); it is logged and named in the delivery's answer, so a
//!   stranger's comment cannot make runs appear.

use std::collections::BTreeMap;

use anyhow::Context;

use evaluator::context::{Comment, Issue};
use evaluator::plan::Authors;
use evaluator::{EvalContext, Event, PullRequest};
use plue_forge::lookup::{ApiTarget, Found};
use plue_forge::payload::{Author, CommentEvent, IssueEvent, IssueFacts, RepoFacts};
use plue_forge::permission::{EngineIdentity, Permission, Standing};
use plue_store::RepoRow;

use super::cause::{Cause, Causers};
use super::git::{self, Mirror};
use super::matching::{self, Occasion};
use super::{Occurrence, Registry};

/// The hidden marker every comment (and issue) the engine writes carries.
pub const ENGINE_MARKER: &str = "<!-- plue:";

/// What an issue or comment delivery did.
#[derive(Debug, Default)]
pub struct Summoned {
    pub runs: Vec<i64>,
    /// Why workflows that matched (or the whole event) started nothing, one line each.
    pub refused: Vec<String>,
}

impl Summoned {
    fn nothing(why: String) -> Summoned {
        tracing::info!("{why}");
        Summoned {
            runs: Vec::new(),
            refused: vec![why],
        }
    }
}

/// Where an event's workflows are evaluated.
struct Point {
    git_ref: String,
    branch: String,
    sha: String,
    pr: Option<PullRequest>,
}

/// One event as the summoning code needs it.
struct Summons<'a> {
    repo: &'a RepoRow,
    event: Event,
    occasion: Occasion<'a>,
    author: &'a Author,
    co_actors: Vec<String>,
    issue: &'a IssueFacts,
    comment: Option<Comment>,
    point: Point,
}

impl Registry {
    /// Runs for an `issues` event.
    pub async fn on_issue(&self, repo: &RepoRow, event: &IssueEvent) -> anyhow::Result<Summoned> {
        if event.issue.is_pull_request {
            return Ok(Summoned::nothing(format!(
                "{}: issue event on pull request #{}: pull requests have their own triggers",
                repo.name, event.issue.number
            )));
        }
        if event.action == "opened" && event.issue.body.contains(ENGINE_MARKER) {
            return Ok(Summoned::nothing(format!(
                "{}: issue #{} was written by Plue (it carries its marker): it summons nothing",
                repo.name, event.issue.number
            )));
        }
        if let Some(why) = self
            .summons_nothing(repo, &Causers::of_issue(event), &[&event.sender])
            .await?
        {
            return Ok(Summoned::nothing(why));
        }
        let point = self.default_branch_point(repo, &event.repo).await?;
        let summons = Summons {
            repo,
            event: Event::Issue,
            occasion: Occasion::Issue {
                action: &event.action,
                label: event.label.as_deref(),
                labels: &event.issue.labels,
            },
            author: &event.sender,
            co_actors: Vec::new(),
            issue: &event.issue,
            comment: None,
            point,
        };
        // An issue is opened once: another delivery of its opening starts nothing new.
        let once = (event.action == "opened")
            .then(|| format!("issue:{}:{}:opened", repo.id, event.issue.number));
        self.summon_once(once, summons).await
    }

    /// Runs for an `issue_comment` event.
    pub async fn on_comment(
        &self,
        repo: &RepoRow,
        event: &CommentEvent,
    ) -> anyhow::Result<Summoned> {
        if event.body.contains(ENGINE_MARKER) {
            return Ok(Summoned::nothing(format!(
                "{}: comment {} carries Plue's marker (Plue wrote it): it summons nothing",
                repo.name, event.comment_id
            )));
        }
        // The commenter, and whoever else sent the event (who edited the comment).
        let authors: Vec<&Author> = std::iter::once(&event.commenter)
            .chain(&event.sender)
            .collect();
        if let Some(why) = self
            .summons_nothing(repo, &Causers::of_comment(event), &authors)
            .await?
        {
            return Ok(Summoned::nothing(why));
        }
        let point = if event.issue.is_pull_request {
            match self
                .pull_request_point(repo, &event.repo, event.issue.number, &event.action)
                .await?
            {
                Some(point) => point,
                None => {
                    return Ok(Summoned::nothing(format!(
                        "{}: the forge knows no pull request #{}",
                        repo.name, event.issue.number
                    )))
                }
            }
        } else {
            self.default_branch_point(repo, &event.repo).await?
        };
        let association = event
            .commenter
            .association
            .clone()
            .unwrap_or_else(|| "NONE".to_string());
        let summons = Summons {
            repo,
            event: Event::Comment,
            occasion: Occasion::Comment {
                action: &event.action,
                on_pull_request: event.issue.is_pull_request,
                // The pattern meets the body's start only: a long body cannot make
                // matching slow (`evaluator::summon::MAX_MATCHED_BYTES`).
                body: evaluator::summon::matched_part(&event.body),
            },
            author: &event.commenter,
            co_actors: event
                .sender
                .as_ref()
                .and_then(|s| s.login.clone())
                .into_iter()
                .collect(),
            issue: &event.issue,
            comment: Some(Comment {
                id: event.comment_id,
                body: event.body.clone(),
                author: event.commenter.login.clone().unwrap_or_default(),
                association,
            }),
            point,
        };
        // A comment is created once: another delivery of it (a forge's redelivery under a
        // new id) starts no second run, which would run the agent and answer again.
        let once = (event.action == "created")
            .then(|| format!("comment:{}:{}:created", repo.id, event.comment_id));
        self.summon_once(once, summons).await
    }

    /// [`Registry::summon`] for an event that happens once per issue or comment, keyed by
    /// `once` (beside the deliveries, whose ids a forge may change on a redelivery): when
    /// it came already, the runs it started then and nothing new.
    async fn summon_once(
        &self,
        once: Option<String>,
        summons: Summons<'_>,
    ) -> anyhow::Result<Summoned> {
        let Some(key) = once else {
            return self.summon(summons).await;
        };
        let repo = summons.repo;
        let store = self.executor.store();
        if !store
            .record_delivery(&repo.forge, &key, repo.id, "summon")
            .await?
        {
            let runs = store.delivery_runs(&repo.forge, &key).await?;
            let why = format!(
                "{}: {key} was delivered already (runs {runs:?}): nothing new starts",
                repo.name
            );
            tracing::info!("{why}");
            return Ok(Summoned {
                runs,
                refused: vec![why],
            });
        }
        match self.summon(summons).await {
            Ok(summoned) => {
                store
                    .set_delivery_runs(&repo.forge, &key, &summoned.runs)
                    .await?;
                Ok(summoned)
            }
            Err(e) => {
                store.forget_delivery(&repo.forge, &key).await?;
                Err(e)
            }
        }
    }

    /// Who the engine is on `repo`'s forge: the login its token writes as, none without a
    /// token, or why the forge could not say (kept a minute, a failure a few seconds).
    pub async fn engine_identity(&self, repo: &RepoRow) -> EngineIdentity {
        self.permissions
            .engine_identity(self.executor.forge_auth(), repo)
            .await
    }

    /// Why an event `causers` caused may summon nothing: the engine is among them (or might
    /// be: [`Registry::cause`]), or one of `authors` is a bot not linked to a Plue user.
    /// `None`: people only, each judged by the triggers' `authors=`.
    async fn summons_nothing(
        &self,
        repo: &RepoRow,
        causers: &Causers,
        authors: &[&Author],
    ) -> anyhow::Result<Option<String>> {
        if let Cause::Engine(why) = self.cause(repo, causers).await {
            return Ok(Some(format!("{why}: what Plue writes summons nothing")));
        }
        for author in authors {
            if let Some(why) = self.unlinked_bot(repo, author).await? {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }

    /// Why `author` may not summon anything as a bot (`None`: not one, or a bot linked to
    /// a Plue user).
    async fn unlinked_bot(
        &self,
        repo: &RepoRow,
        author: &Author,
    ) -> anyhow::Result<Option<String>> {
        if !author.bot {
            return Ok(None);
        }
        let login = author.login.as_deref().unwrap_or("(unnamed)");
        let linked = match &author.login {
            Some(login) => self
                .executor
                .store()
                .user_of_forge_login(&repo.forge, login)
                .await?
                .is_some(),
            None => false,
        };
        Ok((!linked).then(|| {
            format!(
                "{}: {login} is a bot not linked to a Plue user: it summons nothing",
                repo.name
            )
        }))
    }

    /// The head of the default branch (the payload's, else the registered one, else the
    /// remote's `HEAD`).
    async fn default_branch_point(
        &self,
        repo: &RepoRow,
        facts: &RepoFacts,
    ) -> anyhow::Result<Point> {
        let mirror = self.mirror(repo).await?;
        let branch = match facts
            .default_branch
            .clone()
            .or_else(|| repo.default_branch.clone())
        {
            Some(branch) => branch,
            None => mirror.remote_head_branch(&repo.clone_url).await?,
        };
        let git_ref = format!("refs/heads/{branch}");
        let sha = self.resolve(repo, &mirror, &git_ref).await?;
        Ok(Point {
            git_ref,
            branch,
            sha,
            pr: None,
        })
    }

    async fn resolve(
        &self,
        repo: &RepoRow,
        mirror: &Mirror,
        git_ref: &str,
    ) -> anyhow::Result<String> {
        let lock = self.lock(repo.id);
        let _held = lock.lock().await;
        mirror.resolve(&repo.clone_url, git_ref).await
    }

    /// The base of pull request `number` (`None`: the forge says there is none).
    async fn pull_request_point(
        &self,
        repo: &RepoRow,
        facts: &RepoFacts,
        number: u64,
        action: &str,
    ) -> anyhow::Result<Option<Point>> {
        let auth = self.executor.forge_auth();
        let client = self.http.get_or_init(reqwest::Client::new);
        // The lookup's token may be refused (revoked): renewed once, like every exchange.
        let found = auth
            .renewing(repo, || async {
                match ApiTarget::of_repo(auth, repo).await? {
                    Some(target) => target.pull_request(client, number).await.map(Some),
                    None => Ok(None),
                }
            })
            .await?;
        let refs = match found {
            Some(Found::Yes(refs)) => refs,
            Some(Found::NotFound) => return Ok(None),
            None => {
                // No API to ask: the default branch, the usual base.
                let mut point = self.default_branch_point(repo, facts).await?;
                point.pr = Some(PullRequest {
                    number,
                    base: point.branch.clone(),
                    head: String::new(),
                    action: action.to_string(),
                });
                return Ok(Some(point));
            }
        };
        let (base, head) = (refs.base, refs.head);
        git::check_ref(&base.git_ref)
            .map_err(|e| anyhow::anyhow!("pull request #{number}'s base: {e}"))?;
        if !git::is_full_sha(&base.sha) {
            anyhow::bail!(
                "pull request #{number}'s base '{}' is not a full commit sha",
                base.sha
            );
        }
        let mirror = self.mirror(repo).await?;
        self.locked_fetch(repo, &mirror, &repo.clone_url, &[&base.sha])
            .await?;
        Ok(Some(Point {
            git_ref: format!("refs/heads/{}", base.git_ref),
            branch: base.git_ref.clone(),
            sha: base.sha,
            pr: Some(PullRequest {
                number,
                base: base.git_ref,
                head: head.git_ref,
                action: action.to_string(),
            }),
        }))
    }

    /// Evaluates every workflow file at the summons' point and starts a run for each one a
    /// trigger matches and its author may start.
    async fn summon(&self, summons: Summons<'_>) -> anyhow::Result<Summoned> {
        let repo = summons.repo;
        let issue = summons.issue;
        let ctx = EvalContext {
            event: summons.event,
            repo: repo.name.clone(),
            git_ref: summons.point.git_ref.clone(),
            branch: Some(summons.point.branch.clone()),
            sha: summons.point.sha.clone(),
            pr: summons.point.pr.clone(),
            changed_files: Vec::new(),
            inputs: BTreeMap::new(),
            issue: Some(Issue {
                number: issue.number,
                title: issue.title.clone(),
                body: issue.body.clone(),
                labels: issue.labels.clone(),
                author: issue.author.clone(),
                url: issue.url.clone(),
            }),
            comment: summons.comment.clone(),
        };
        let mirror = self.mirror(repo).await?;
        let files = mirror.workflow_files(&ctx.sha).await?;
        let evaluations =
            futures::future::join_all(files.iter().map(|file| self.evaluate(file, &ctx))).await;
        let triggerer = match &summons.author.login {
            Some(login) => {
                self.forge_triggerer(repo, Some(login), &summons.co_actors)
                    .await?
            }
            None => None,
        };
        let mut done = Summoned::default();
        // The author's standing, learnt once per level a matching workflow asks.
        let mut standings: BTreeMap<Authors, Standing> = BTreeMap::new();
        for (file, evaluated) in files.iter().zip(evaluations) {
            let evaluated = match evaluated {
                Ok(evaluated) => evaluated,
                Err(message) => {
                    tracing::info!(repository = %repo.name, "{}: does not evaluate for a {} event: {message}", file.path, ctx.event.as_str());
                    done.refused.push(format!(
                        "{}: does not evaluate at {:.12}",
                        file.path, ctx.sha
                    ));
                    continue;
                }
            };
            let Some(asked) = matching::summons(&evaluated.plan, summons.occasion) else {
                continue;
            };
            let standing = match (&summons.author.login, standings.get(&asked.authors)) {
                (_, Some(standing)) => standing.clone(),
                (None, None) => Standing {
                    permission: Permission::None,
                    source: "the payload names no valid login".into(),
                },
                (Some(login), None) => {
                    let standing = self
                        .permissions
                        .of(
                            self.executor.store(),
                            self.executor.forge_auth(),
                            repo,
                            login,
                            summons.author.association.as_deref(),
                            asked.authors,
                        )
                        .await
                        // Never "holds none": a writer refused for a fault is the wrong
                        // answer; the delivery fails and a redelivery asks again.
                        .with_context(|| {
                            format!("{}: learning what {login} may start", file.path)
                        })?;
                    standings.insert(asked.authors, standing.clone());
                    standing
                }
            };
            let author = summons.author.login.as_deref().unwrap_or("(unnamed)");
            let trusted = standing.permission.meets(asked.authors);
            if !trusted && !asked.untrusted {
                let why = format!(
                    "{}: {author} may not start it: it asks authors=\"{}\" and {author} holds {} ({})",
                    file.path,
                    asked.authors.as_str(),
                    standing.permission.as_str(),
                    standing.source
                );
                tracing::info!(repository = %repo.name, "{why}");
                done.refused.push(why);
                continue;
            }
            if !trusted {
                tracing::info!(repository = %repo.name, "{}: {author} holds {} ({}): an untrusted run, like a fork's", file.path, standing.permission.as_str(), standing.source);
            }
            let occurrence = Occurrence {
                repo,
                ctx: ctx.clone(),
                occasion: summons.occasion,
                fetch_url: repo.clone_url.clone(),
                secrets_allowed: trusted,
                triggerer: triggerer.clone(),
                fork: None,
            };
            let path = file.path.as_str();
            match self.start_run(&occurrence, path, Ok(evaluated)).await {
                Ok(run) => done.runs.push(run),
                Err(e) => {
                    let message = format!("{path}: the run could not be stored: {e:#}");
                    done.runs
                        .push(self.start_run(&occurrence, path, Err(message)).await?);
                }
            }
        }
        Ok(done)
    }
}
