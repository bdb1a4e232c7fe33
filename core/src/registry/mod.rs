//! The registry: from a repository event to runs. It fetches the event's commit into the
//! repository's bare mirror, evaluates every `*.plue.py` file there through the evaluator
//! pool with the event's `ctx`, and starts a run for each workflow whose triggers match.
//!
//! Invariants:
//! - A workflow file that fails to evaluate becomes a failed run carrying the evaluator's
//!   message (and an `error` commit status); it never fails the event.
//! - Pull requests from forks start runs whose steps get no secrets, and a fork's commit
//!   is fetched from the repository's own forge only, with no credential of the engine's
//!   host (`fork_url`, [`git::Mirror::fetch_fork`]): the payload's URL never reaches git
//!   (only a plain `owner/name` read from it), so it cannot point the fetch at a path on
//!   the engine's host, another host, or another transport; for a repository at a local
//!   path, never at one inside the engine's mirrors.
//! - A push to the default branch refreshes the repository's cron schedules from the
//!   workflow files at that commit; a deleted ref starts nothing.
//! - Mirror fetches of one repository are serialised by a per-repository lock.
//! - A run a webhook starts records its forge actor (the pusher, the pull request's author)
//!   as its triggerer, with the user that login is linked to; a schedule's run records
//!   `schedule`, a dispatch the API's caller. Each is stored before the run's first
//!   advance ([`Executor::start_run_by`]), so no gate of the run is decided before its
//!   triggerer is known.
//! - Issues and comments ([`summon`]) evaluate the workflow files at the default branch's
//!   head or a pull request's base, never at a head a stranger controls, and start runs
//!   only for authors a trigger allows.
//!
//! Why one file past ~600 lines: the event → runs path (fetch, evaluate, match, start) is
//! one sequence; git, matching and summoning are their own modules.

mod cause;
pub mod checkout_packs;
pub mod git;
pub mod matching;
pub mod modules;
pub mod summon;
pub mod workflows;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use evaluator::inputs::{check as check_inputs, declared as manual_inputs};
use evaluator::plan::{Plan, Trigger};
use evaluator::{EvalContext, EvalError, EvaluatorPool, Event, PullRequest};
use plue_forge::payload::{PullRequestEvent, Push};
use plue_forge::repo_identity::NotConfirmed;
use plue_store::{now_ms, NewRun, RepoRow, RunRepo, ScheduleEntry, ScheduleRow, Triggerer};
use plue_types::protocol::WorkspaceSource;

use crate::executor::Executor;
use crate::launch::render_problems;
use cause::Causers;
use checkout_packs::CheckoutPacks;
use git::{Mirror, WorkflowFile};
use matching::Occasion;

/// The most of a pull request's title a run keeps (GitHub allows 256 characters).
const MAX_TITLE_CHARS: usize = 1000;

/// Why a manual dispatch started no run. Each message is a sentence for the person who
/// dispatched: git's own output goes to the log, never into one.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No such ref or workflow.
    #[error("{0}")]
    NotFound(String),
    /// The workflow refuses the dispatch (no manual trigger, bad inputs, a bad ref name,
    /// a file that does not evaluate).
    #[error("{0}")]
    Rejected(String),
    /// The repository could not be fetched from its forge.
    #[error("{0}")]
    Unavailable(String),
    /// The repository's name now names another repository on its forge than the one
    /// registered ([`plue_forge::repo_identity`]).
    #[error("{0}")]
    Moved(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub struct Registry {
    executor: Arc<Executor>,
    evaluator: Arc<EvaluatorPool>,
    mirrors: PathBuf,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Who may summon workflows from issues and comments ([`summon`]).
    permissions: plue_forge::permission::Permissions,
    /// For the forge API lookups of [`summon`].
    http: std::sync::OnceLock<reqwest::Client>,
    /// The default branches' workflows, kept per head ([`workflows`]).
    workflows: workflows::Cache,
    /// Commits of the mirrors as packs, for runners' checkouts ([`checkout_packs`]);
    /// `None` when runners fetch every checkout from the forge.
    checkouts: Option<Arc<CheckoutPacks>>,
}

/// Where repository `repo_id`'s mirror lives under `mirrors`.
fn mirror_dir(mirrors: &Path, repo_id: i64) -> PathBuf {
    mirrors.join(format!("{repo_id}.git"))
}

/// The facts of one event that every matching workflow shares.
struct Occurrence<'a> {
    repo: &'a RepoRow,
    ctx: EvalContext,
    occasion: Occasion<'a>,
    /// Where runners fetch the commit from.
    fetch_url: String,
    secrets_allowed: bool,
    /// Who the runs are recorded as started by (`None`: the caller records it).
    triggerer: Option<Triggerer>,
    /// A pull request's fork (`owner/name`, from its head clone URL), whose runs' caches
    /// are the fork's own partition (`crate::caches`).
    fork: Option<String>,
}

impl Registry {
    /// A registry keeping its mirrors under `mirrors`.
    pub fn new(executor: Arc<Executor>, evaluator: Arc<EvaluatorPool>, mirrors: PathBuf) -> Self {
        Registry {
            executor,
            evaluator,
            checkouts: Some(Arc::new(CheckoutPacks::new(mirrors.clone()))),
            mirrors,
            locks: Mutex::new(HashMap::new()),
            permissions: Default::default(),
            http: std::sync::OnceLock::new(),
            workflows: Default::default(),
        }
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// This registry, its mirrors serving runners' checkouts or not (`serve: false`: every
    /// checkout comes from the forge; no pack is made).
    pub fn serving_checkouts(mut self, serve: bool) -> Self {
        if !serve {
            self.checkouts = None;
        }
        self
    }

    /// The packs runners check commits of these mirrors out from, when it serves them.
    pub fn checkout_packs(&self) -> Option<Arc<CheckoutPacks>> {
        self.checkouts.clone()
    }

    /// Starts making `sha`'s pack of repository `repo_id` ([`CheckoutPacks::prepare`]).
    fn prepare_checkout(&self, repo_id: i64, sha: &str) {
        if let Some(checkouts) = &self.checkouts {
            checkouts.prepare(repo_id, sha);
        }
    }

    /// Runs for a push; none for a deleted ref.
    pub async fn on_push(&self, repo: &RepoRow, push: &Push) -> anyhow::Result<Vec<i64>> {
        let Some(after) = push.after.as_deref() else {
            return Ok(Vec::new());
        };
        if let Some(branch) = &push.repo.default_branch {
            self.executor
                .store()
                .set_default_branch(repo.id, branch)
                .await?;
        }
        let mirror = self.mirror(repo).await?;
        // A delivery's path is a chain of short git processes; the ones that do not need
        // each other's results run side by side. `before` (usually the branch's previous
        // push, already here) is looked for while `after` is fetched, and once more after
        // the fetch when it was not here (the fetch may have brought it).
        let before = push.before.as_deref();
        let has_before = || async {
            match before {
                Some(sha) => mirror.has_commit(sha).await,
                None => false,
            }
        };
        let wants = [after];
        let (fetched, before_here) = tokio::join!(
            self.locked_fetch(repo, &mirror, &repo.clone_url, &wants),
            has_before()
        );
        fetched?;
        // The pack its steps' runners will ask for is made while the workflows are read
        // and evaluated, off the first step's path (once: `prepare` again as the run is
        // stored finds it made or being made).
        self.prepare_checkout(repo.id, after);
        let before_here = before_here || has_before().await;
        let changed = async {
            anyhow::Ok(match before {
                Some(before) if before_here => Some(mirror.changed_files(before, after).await?),
                Some(_) => push.changed_files.clone(),
                None => match &push.changed_files {
                    Some(files) => Some(files.clone()),
                    None => Some(mirror.commit_files(after).await?),
                },
            })
        };
        let (changed, files) = tokio::join!(changed, mirror.workflow_files(after));
        let (changed, files) = (changed?, files?);
        let branch = push.git_ref.strip_prefix("refs/heads/").map(String::from);
        let ctx = EvalContext {
            event: Event::Push,
            repo: repo.name.clone(),
            git_ref: push.git_ref.clone(),
            branch: branch.clone(),
            sha: after.to_string(),
            pr: None,
            changed_files: changed.clone().unwrap_or_default(),
            inputs: BTreeMap::new(),
            issue: None,
            comment: None,
        };
        let occurrence = Occurrence {
            repo,
            ctx,
            occasion: Occasion::Push {
                git_ref: &push.git_ref,
                changed_files: changed.as_deref(),
            },
            fetch_url: repo.clone_url.clone(),
            secrets_allowed: !self.cause(repo, &Causers::of_push(push)).await.is_engine(),
            triggerer: self
                .forge_triggerer(repo, push.actor.as_deref(), &push.co_actors)
                .await?,
            fork: None,
        };
        let (runs, plans) = self.start_matching(&occurrence, &files).await?;
        let default_branch = push
            .repo
            .default_branch
            .clone()
            .or_else(|| repo.default_branch.clone());
        if let (Some(branch), Some(default)) = (&branch, &default_branch) {
            if branch == default {
                self.forget_workflows(repo.id);
                self.refresh_schedules(repo, branch, after, &plans).await?;
            }
        }
        Ok(runs)
    }

    /// Runs for a pull request event.
    pub async fn on_pull_request(
        &self,
        repo: &RepoRow,
        pr: &PullRequestEvent,
    ) -> anyhow::Result<Vec<i64>> {
        let mirror = self.mirror(repo).await?;
        // The head commit: from the repository itself (GitHub and Gitea keep
        // refs/pull/N/head there), else from the fork it lives in.
        let pull_ref = format!("refs/pull/{}/head", pr.number);
        let mut fetch_url = repo.clone_url.clone();
        let mut fetched = self
            .locked_fetch(
                repo,
                &mirror,
                &repo.clone_url,
                &[&pr.head_sha, &pr.base_sha],
            )
            .await;
        if fetched.is_err() {
            fetched = self
                .locked_fetch(repo, &mirror, &repo.clone_url, &[&pull_ref, &pr.base_sha])
                .await;
        }
        if let (Err(_), Some(fork)) = (&fetched, &pr.head_clone_url) {
            // The payload's URL names the fork; the fetch goes to the fork of that name on
            // the repository's own forge, anonymously (see `fork_url`).
            let url = fork_url(&repo.clone_url, fork)
                .filter(|url| !self.inside_mirrors(url))
                .with_context(|| {
                    let named: String = plue_forge::without_credentials(fork)
                        .chars()
                        .take(200)
                        .collect();
                    format!(
                        "the pull request's head repository {named:?} names no plain \
                         owner/name beside {} on its forge: not fetched",
                        repo.name
                    )
                })?;
            let lock = self.lock(repo.id);
            let held = lock.lock().await;
            fetched = mirror.fetch_fork(&url, &pr.head_sha).await;
            drop(held);
            fetch_url = url;
        }
        fetched?;
        if !mirror.has_commit(&pr.head_sha).await {
            anyhow::bail!(
                "the pull request's head commit {} could not be fetched",
                pr.head_sha
            );
        }
        let changed = if mirror.has_commit(&pr.base_sha).await {
            Some(
                mirror
                    .pull_request_files(&pr.base_sha, &pr.head_sha)
                    .await?,
            )
        } else {
            None
        };
        let ctx = EvalContext {
            event: Event::PullRequest,
            repo: repo.name.clone(),
            git_ref: pull_ref,
            branch: Some(pr.head_ref.clone()),
            sha: pr.head_sha.clone(),
            pr: Some(PullRequest {
                number: pr.number,
                base: pr.base_ref.clone(),
                head: pr.head_ref.clone(),
                action: pr.action.clone(),
            }),
            changed_files: changed.clone().unwrap_or_default(),
            inputs: BTreeMap::new(),
            issue: None,
            comment: None,
        };
        let files = mirror.workflow_files(&pr.head_sha).await?;
        let occurrence = Occurrence {
            repo,
            ctx,
            occasion: Occasion::PullRequest {
                action: &pr.action,
                base_branch: &pr.base_ref,
                changed_files: changed.as_deref(),
            },
            fetch_url,
            secrets_allowed: !pr.from_fork
                && !self
                    .cause(repo, &Causers::of_pull_request(pr))
                    .await
                    .is_engine(),
            triggerer: self
                .forge_triggerer(repo, pr.actor.as_deref(), &pr.co_actors)
                .await?,
            fork: pr
                .head_clone_url
                .as_deref()
                .filter(|_| pr.from_fork)
                .and_then(fork_name),
        };
        let runs = self.start_matching(&occurrence, &files).await?.0;
        // The run page names the pull request by its title (`ctx` holds none). The runs
        // exist either way: a title that cannot be stored is logged, not an error.
        let title: String = pr.title.chars().take(MAX_TITLE_CHARS).collect();
        if !title.trim().is_empty() {
            for run in &runs {
                if let Err(e) = self.executor.store().set_run_title(*run, &title).await {
                    tracing::warn!("run {run}: storing its pull request's title: {e:#}");
                }
            }
        }
        Ok(runs)
    }

    /// The branch a dispatch without a ref runs on: `repo`'s default branch as recorded,
    /// else the branch its remote's `HEAD` names, learnt now and recorded. The first
    /// dispatch right after registration comes before the background read at registration
    /// ([`Registry::sync_schedules`]) has recorded it; it ran on `HEAD` itself, a run
    /// recorded on no branch. Never `HEAD`: a remote naming no branch is a 404.
    pub async fn default_branch(&self, repo: &RepoRow) -> Result<String, DispatchError> {
        if let Some(branch) = &repo.default_branch {
            return Ok(branch.clone());
        }
        // Whoever holds the name now is asked nothing, not even its `HEAD`.
        self.confirm_repository(repo).await?;
        let mirror = self.mirror(repo).await?;
        match mirror.remote_head(&repo.clone_url).await {
            Ok(Some(branch)) => {
                self.executor
                    .store()
                    .set_default_branch(repo.id, &branch)
                    .await?;
                Ok(branch)
            }
            Ok(None) => Err(DispatchError::NotFound(format!(
                "{} names no default branch (its HEAD is no branch): dispatch a branch, tag \
                 or commit",
                repo.name
            ))),
            Err(e) => {
                let why = git_reason(&format!("{e:#}"));
                tracing::warn!(repository = %repo.name, "reading the default branch: {why}");
                Err(DispatchError::Unavailable(format!(
                    "{} could not be fetched from its forge to learn its default branch: {why}",
                    repo.name
                )))
            }
        }
    }

    /// Confirms `repo`'s name still names the repository registered on its forge (its
    /// forge id), binding one not bound yet; every start the engine makes without a
    /// delivery (a dispatch, a schedule's tick, a re-run) asks this first.
    pub async fn confirm_repository(&self, repo: &RepoRow) -> Result<(), DispatchError> {
        let client = self.http.get_or_init(reqwest::Client::new);
        let store = self.executor.store();
        plue_forge::repo_identity::confirm(client, self.executor.forge_auth(), store, repo)
            .await
            .map_err(|refused| match refused {
                NotConfirmed::Moved(why) => DispatchError::Moved(why),
                NotConfirmed::Unavailable(why) => DispatchError::Unavailable(why),
            })
    }

    /// Starts `workflow` (a file path, its name without `.plue.py`, or a plan name) at
    /// `git_ref` with `inputs` checked against its manual trigger, recording `triggerer`
    /// (the API's caller) as who started it.
    pub async fn dispatch(
        &self,
        repo: &RepoRow,
        workflow: &str,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
        triggerer: Option<Triggerer>,
    ) -> Result<i64, DispatchError> {
        self.confirm_repository(repo).await?;
        let mirror = self.mirror(repo).await?;
        let (sha, git_ref) = {
            let lock = self.lock(repo.id);
            let _held = lock.lock().await;
            // A short name is the branch, else the tag, of that name — never git's own
            // order, in which a pushed tag `main` wins over the branch `main`: the run was
            // recorded on branch `main` (which an environment may allow) with the tag's
            // commit.
            let mut found = None;
            let mut first_error = None;
            for candidate in dispatch_candidates(git_ref) {
                match mirror.resolve(&repo.clone_url, &candidate).await {
                    Ok(sha) => {
                        found = Some((sha, candidate));
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            found.ok_or_else(|| {
                let why = first_error.map(|e| format!("{e:#}")).unwrap_or_default();
                let refused = unresolved(&repo.name, git_ref, &why);
                if let DispatchError::Unavailable(_) = refused {
                    // What the answer says, for the operator too, at the default level.
                    tracing::warn!(
                        repository = %repo.name,
                        "dispatch of '{git_ref}': fetching failed: {}",
                        git_reason(&why)
                    );
                } else {
                    tracing::info!("{}: dispatch of '{git_ref}': {why}", repo.name);
                }
                refused
            })?
        };
        let git_ref = git_ref.as_str();
        let files = mirror.workflow_files(&sha).await?;
        let branch = branch_of(git_ref);
        let mut ctx = EvalContext {
            event: Event::Manual,
            repo: repo.name.clone(),
            git_ref: full_ref(git_ref),
            branch,
            sha: sha.clone(),
            pr: None,
            changed_files: Vec::new(),
            inputs: inputs.clone(),
            issue: None,
            comment: None,
        };
        let by_path = files.iter().find(|f| {
            f.path == workflow
                || f.path.strip_suffix(git::WORKFLOW_SUFFIX) == Some(workflow)
                || file_stem(&f.path) == workflow
        });
        let (file, mut evaluated) = match by_path {
            Some(file) => {
                let evaluated = self.evaluate(file, &ctx).await;
                (file, evaluated)
            }
            None => {
                let mut found = None;
                for file in &files {
                    let evaluated = self.evaluate(file, &ctx).await;
                    if matches!(&evaluated, Ok(plan) if plan.plan.name == workflow) {
                        found = Some((file, evaluated));
                        break;
                    }
                }
                found.ok_or_else(|| {
                    let known: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                    DispatchError::NotFound(format!(
                        "no workflow '{workflow}' at {git_ref} ({sha:.12}); workflow files there: {}",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ))
                })?
            }
        };
        let plan = match &evaluated {
            Ok(evaluated) => &evaluated.plan,
            Err(message) => {
                return Err(DispatchError::Rejected(format!(
                    "{} does not evaluate:\n{message}",
                    file.path
                )))
            }
        };
        let declared = manual_inputs(plan).ok_or_else(|| {
            DispatchError::Rejected(format!(
                "{} has no manual trigger (add Trigger.manual() to dispatch it)",
                file.path
            ))
        })?;
        let complete = check_inputs(declared, inputs).map_err(DispatchError::Rejected)?;
        if &complete != inputs {
            // Evaluate again so `ctx.inputs` shows the defaults too.
            ctx.inputs = complete;
            evaluated = self.evaluate(file, &ctx).await;
        }
        let evaluated = evaluated.map_err(|message| {
            DispatchError::Rejected(format!("{} does not evaluate:\n{message}", file.path))
        })?;
        let occurrence = Occurrence {
            repo,
            ctx,
            occasion: Occasion::Manual,
            fetch_url: repo.clone_url.clone(),
            secrets_allowed: true,
            triggerer,
            fork: None,
        };
        Ok(self
            .start_run(&occurrence, &file.path, Ok(evaluated))
            .await?)
    }

    /// Starts the run of one schedule tick (`None` when the workflow no longer has that
    /// schedule at the recorded commit).
    pub async fn fire_schedule(
        &self,
        repo: &RepoRow,
        schedule: &ScheduleRow,
    ) -> anyhow::Result<Option<i64>> {
        if let Err(refused) = self.confirm_repository(repo).await {
            tracing::warn!(repository = %repo.name, workflow = %schedule.workflow_path, "schedule '{}' starts no run: {refused}", schedule.cron);
            return Ok(None);
        }
        let mirror = self.mirror(repo).await?;
        self.locked_fetch(repo, &mirror, &repo.clone_url, &[&schedule.sha])
            .await?;
        let files = mirror.workflow_files(&schedule.sha).await?;
        let Some(file) = files.iter().find(|f| f.path == schedule.workflow_path) else {
            return Ok(None);
        };
        let ctx = branch_context(Event::Schedule, repo, &schedule.branch, &schedule.sha);
        let evaluated = self.evaluate(file, &ctx).await;
        if let Ok(plan) = &evaluated {
            if !matching::matches(
                &plan.plan,
                Occasion::Schedule {
                    cron: &schedule.cron,
                },
            ) {
                return Ok(None);
            }
        }
        let occurrence = Occurrence {
            repo,
            ctx,
            occasion: Occasion::Schedule {
                cron: &schedule.cron,
            },
            fetch_url: repo.clone_url.clone(),
            secrets_allowed: true,
            triggerer: Some(Triggerer {
                name: "schedule".to_string(),
                ..Triggerer::default()
            }),
            fork: None,
        };
        Ok(Some(
            self.start_run(&occurrence, &file.path, evaluated).await?,
        ))
    }

    /// Reads the schedules of the repository's default branch (at registration; later
    /// pushes to the branch keep them current).
    pub async fn sync_schedules(&self, repo: &RepoRow) -> anyhow::Result<()> {
        let mirror = self.mirror(repo).await?;
        let branch_ref = repo.default_branch.as_deref().unwrap_or("HEAD");
        let sha = {
            let lock = self.lock(repo.id);
            let _held = lock.lock().await;
            mirror.resolve(&repo.clone_url, branch_ref).await?
        };
        let branch = match &repo.default_branch {
            Some(branch) => branch.clone(),
            None => {
                let branch = mirror
                    .remote_head_branch(&repo.clone_url)
                    .await
                    .unwrap_or_else(|_| "main".to_string());
                self.executor
                    .store()
                    .set_default_branch(repo.id, &branch)
                    .await?;
                branch
            }
        };
        let files = mirror.workflow_files(&sha).await?;
        let ctx = branch_context(Event::Schedule, repo, &branch, &sha);
        let mut plans = Vec::new();
        for file in &files {
            if let Ok(evaluated) = self.evaluate(file, &ctx).await {
                plans.push((file.path.clone(), evaluated.plan));
            }
        }
        self.refresh_schedules(repo, &branch, &sha, &plans).await
    }

    async fn refresh_schedules(
        &self,
        repo: &RepoRow,
        branch: &str,
        sha: &str,
        plans: &[(String, Plan)],
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut entries = Vec::new();
        for (path, plan) in plans {
            for trigger in &plan.triggers {
                if let Trigger::Schedule { cron } = trigger {
                    if let Some(next_fire_at) = next_fire(cron, now) {
                        entries.push(ScheduleEntry {
                            workflow_path: path.clone(),
                            cron: cron.clone(),
                            next_fire_at,
                        });
                    }
                }
            }
        }
        self.executor
            .store()
            .replace_schedules(repo.id, branch, sha, &entries)
            .await
    }

    /// Evaluates every file and starts a run for each match (and each file that does
    /// not evaluate). Returns the run ids and the plans that evaluated.
    async fn start_matching(
        &self,
        occurrence: &Occurrence<'_>,
        files: &[WorkflowFile],
    ) -> anyhow::Result<(Vec<i64>, Vec<(String, Plan)>)> {
        let evaluations = futures::future::join_all(
            files
                .iter()
                .map(|file| self.evaluate(file, &occurrence.ctx)),
        )
        .await;
        let mut runs = Vec::new();
        let mut plans = Vec::new();
        // One file never costs the others their runs: a run that cannot be stored becomes a
        // failed run of that file (or, if even that fails, a log line), and the loop goes on.
        let mut first_error = None;
        for (file, evaluated) in files.iter().zip(evaluations) {
            let started = match evaluated {
                Ok(evaluated) => {
                    let matched = matching::matches(&evaluated.plan, occurrence.occasion);
                    plans.push((file.path.clone(), evaluated.plan.clone()));
                    if !matched {
                        continue;
                    }
                    match self.start_run(occurrence, &file.path, Ok(evaluated)).await {
                        Ok(run) => Ok(run),
                        Err(e) => {
                            let message =
                                format!("{}: the run could not be stored: {e:#}", file.path);
                            self.start_run(occurrence, &file.path, Err(message)).await
                        }
                    }
                }
                Err(message) => self.start_run(occurrence, &file.path, Err(message)).await,
            };
            match started {
                Ok(run) => runs.push(run),
                Err(e) => {
                    tracing::warn!("{}: cannot store a run: {e:#}", file.path);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if runs.is_empty() && plans.is_empty() => Err(e),
            _ => Ok((runs, plans)),
        }
    }

    /// The triggerer of a run a forge's delivery starts: the actor's login (and every
    /// co-actor's: the sender who pushed onto somebody's pull request) as `forge:login`
    /// separated by spaces, and the user the first linked one is linked to (if any, and
    /// not disabled). Each of them may not decide the run's gates with `exclude_triggerer`.
    async fn forge_triggerer(
        &self,
        repo: &RepoRow,
        actor: Option<&str>,
        co_actors: &[String],
    ) -> anyhow::Result<Option<Triggerer>> {
        let Some(login) = actor else {
            return Ok(None);
        };
        let mut user_id = None;
        let mut logins = Vec::new();
        for each in std::iter::once(login).chain(co_actors.iter().map(String::as_str)) {
            if user_id.is_none() {
                user_id = self
                    .executor
                    .store()
                    .user_of_forge_login(&repo.forge, each)
                    .await?;
            }
            logins.push(format!("{}:{each}", repo.forge));
        }
        Ok(Some(Triggerer {
            name: login.to_string(),
            user_id,
            forge_login: Some(logins.join(" ")),
        }))
    }

    /// Stores the run of `path` (a failed run when it did not evaluate) and who started it.
    async fn start_run(
        &self,
        occurrence: &Occurrence<'_>,
        path: &str,
        evaluated: Result<evaluator::EvaluatedPlan, String>,
    ) -> anyhow::Result<i64> {
        self.store_run(occurrence, path, evaluated).await
    }

    async fn store_run(
        &self,
        occurrence: &Occurrence<'_>,
        path: &str,
        evaluated: Result<evaluator::EvaluatedPlan, String>,
    ) -> anyhow::Result<i64> {
        let ctx = &occurrence.ctx;
        let context_json = serde_json::to_string(ctx).context("serialising ctx")?;
        // Stored without a credential: a claim adds a short-lived one where one is needed.
        let workspace = WorkspaceSource::Git {
            url: occurrence.fetch_url.clone(),
            sha: ctx.sha.clone(),
            credential: None,
        };
        let repo = Some(RunRepo {
            repo_id: occurrence.repo.id,
            secrets_allowed: occurrence.secrets_allowed,
        });
        // The run as stored, whichever plan it carries: the evaluated one, or a placeholder
        // for a file that did not evaluate.
        let new_run = |plan, plan_json, plan_hash| NewRun {
            workflow_source: &occurrence.repo.name,
            workflow_path: path,
            event: ctx.event.as_str(),
            git_ref: &ctx.git_ref,
            sha: &ctx.sha,
            context_json: &context_json,
            plan,
            plan_json,
            plan_hash,
            workspace: &workspace,
            rerun_of: None,
            repo,
        };
        match evaluated {
            Ok(evaluated) => {
                // Its first step's runner asks for the commit as soon as it is queued (the
                // engine serves checkouts from the repository's own URL only).
                if occurrence.fetch_url == occurrence.repo.clone_url {
                    self.prepare_checkout(occurrence.repo.id, &ctx.sha);
                }
                // Who started it is stored before its first advance, so no gate of the run
                // is decided before the engine knows whom it excludes.
                self.executor
                    .start_run_of_fork(
                        &new_run(
                            &evaluated.plan,
                            &evaluated.canonical_json,
                            &evaluated.plan_hash,
                        ),
                        occurrence.triggerer.as_ref(),
                        occurrence.fork.as_deref(),
                    )
                    .await
            }
            Err(message) => {
                let placeholder = Plan::new(path, Vec::new());
                let plan_json = placeholder.canonical_json();
                let run_id = self
                    .executor
                    .store()
                    .create_failed_run(&new_run(&placeholder, &plan_json, ""), &message)
                    .await?;
                if let Some(triggerer) = &occurrence.triggerer {
                    self.executor
                        .store()
                        .record_trigger(run_id, triggerer)
                        .await
                        .with_context(|| format!("recording who started run {run_id}"))?;
                }
                self.executor
                    .events()
                    .send(plue_store::events::Event::RunFinished { run_id });
                Ok(run_id)
            }
        }
    }

    /// Evaluates one file; the error is the evaluator's message.
    async fn evaluate(
        &self,
        file: &WorkflowFile,
        ctx: &EvalContext,
    ) -> Result<evaluator::EvaluatedPlan, String> {
        let Some(source) = &file.source else {
            return Err(format!(
                "{}: the file is not UTF-8 text or is larger than {} bytes",
                file.path,
                git::MAX_WORKFLOW_BYTES
            ));
        };
        let started = std::time::Instant::now();
        let evaluated = self.evaluate_source(&file.path, source, ctx).await;
        crate::metrics::record(crate::metrics::evaluation(&evaluated, started));
        match evaluated {
            Ok(evaluated) => Ok(evaluated),
            Err(EvalError::Invalid(problems)) => Err(render_problems(&problems)),
            Err(e) => Err(format!("{}: {e}", file.path)),
        }
    }

    /// `repo`'s mirror; for a repository served as the GitHub App, its fetches send a
    /// read-only installation token (a private repository's clone URL carries none),
    /// renewed when the forge refuses it.
    async fn mirror(&self, repo: &RepoRow) -> anyhow::Result<Mirror> {
        Ok(Mirror::open(mirror_dir(&self.mirrors, repo.id))
            .await?
            .with_forge_credential(self.executor.forge_auth(), repo))
    }

    /// Removes repository `repo_id`'s git mirror, if there is one: when the repository is
    /// deleted, and before a new one's first fetch — a mirror left under its id (a
    /// repository deleted by an engine that kept them) holds another repository's commits,
    /// which a dispatch by SHA would run without fetching.
    pub async fn forget_mirror(&self, repo_id: i64) -> anyhow::Result<()> {
        let lock = self.lock(repo_id);
        let _held = lock.lock().await;
        if let Some(checkouts) = &self.checkouts {
            checkouts.forget_repo(repo_id);
        }
        let dir = mirror_dir(&self.mirrors, repo_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing the git mirror {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    async fn locked_fetch(
        &self,
        repo: &RepoRow,
        mirror: &Mirror,
        url: &str,
        wants: &[&str],
    ) -> anyhow::Result<()> {
        let lock = self.lock(repo.id);
        let _held = lock.lock().await;
        mirror.fetch(url, wants).await
    }

    /// Whether `url`, a local path or `file://` URL, is inside the mirrors' directory (a
    /// repository at a local path whose forks are its siblings must not name one of the
    /// engine's mirrors as one).
    fn inside_mirrors(&self, url: &str) -> bool {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if !path.starts_with('/') {
            return false;
        }
        let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        // `git` finds `<path>.git` for `<path>` too.
        let candidates = [PathBuf::from(path), PathBuf::from(format!("{path}.git"))];
        let mirrors = resolve(&self.mirrors);
        candidates
            .iter()
            .any(|candidate| resolve(candidate).starts_with(&mirrors))
    }

    fn lock(&self, repo_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(repo_id).or_default().clone()
    }
}

/// `ctx` for an event on the head of `branch` (no pull request, changes or inputs).
fn branch_context(event: Event, repo: &RepoRow, branch: &str, sha: &str) -> EvalContext {
    EvalContext {
        event,
        repo: repo.name.clone(),
        git_ref: format!("refs/heads/{branch}"),
        branch: Some(branch.to_string()),
        sha: sha.to_string(),
        pr: None,
        changed_files: Vec::new(),
        inputs: BTreeMap::new(),
        issue: None,
        comment: None,
    }
}

/// The next fire time after `now_ms` of a cron expression (UTC), in ms.
pub fn next_fire(cron: &str, now_ms: i64) -> Option<i64> {
    let cron = evaluator::validate::parse_cron(cron).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms)?;
    let next = cron.find_next_occurrence(&now, false).ok()?;
    Some(next.timestamp_millis())
}

fn file_stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(git::WORKFLOW_SUFFIX).unwrap_or(name)
}

fn full_ref(git_ref: &str) -> String {
    if git_ref.starts_with("refs/") || git::is_full_sha(git_ref) {
        git_ref.to_string()
    } else {
        format!("refs/heads/{git_ref}")
    }
}

/// The refs a dispatch of `git_ref` tries, in order: a short name as the branch, then the
/// tag, of that name; a full ref, a commit or `HEAD` as given.
fn dispatch_candidates(git_ref: &str) -> Vec<String> {
    if git_ref.starts_with("refs/") || git::is_full_sha(git_ref) || git_ref == "HEAD" {
        vec![git_ref.to_string()]
    } else {
        vec![
            format!("refs/heads/{git_ref}"),
            format!("refs/tags/{git_ref}"),
        ]
    }
}

/// Why `git_ref` could not be resolved, as a sentence, from git's error `why`: a missing
/// ref or a bad name in Plue's words; a fetch that failed with git's own reason
/// ([`git_reason`]: one line, no credentials), so the caller of the API's 409 learns why.
fn unresolved(repo: &str, git_ref: &str, why: &str) -> DispatchError {
    let missing = [
        "couldn't find remote ref",
        "not our ref",
        "no such remote ref",
        "is not a commit",
        "unadvertised object",
        "not a valid object",
    ];
    if git::check_ref(git_ref).is_err() && !git::is_full_sha(git_ref) {
        DispatchError::Rejected(format!(
            "'{git_ref}' is not a valid branch, tag or commit name"
        ))
    } else if missing.iter().any(|m| why.contains(m)) {
        DispatchError::NotFound(format!("{repo} has no branch, tag or commit '{git_ref}'"))
    } else {
        DispatchError::Unavailable(format!(
            "{repo} could not be fetched from its forge to read '{git_ref}': {}",
            git_reason(why)
        ))
    }
}

/// Most characters of git's reason an answer quotes.
const REASON_CHARS: usize = 300;

/// Git's error `why` as an answer shows it: git's own last words (after its last
/// `fatal: `, else the whole chain), with the credentials of every URL in it blanked,
/// on one escaped line of at most [`REASON_CHARS`] characters.
fn git_reason(why: &str) -> String {
    let said = why
        .rfind("fatal: ")
        .map_or(why, |at| &why[at + "fatal: ".len()..])
        .trim();
    let is_separator = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>');
    let mut shown = String::with_capacity(said.len());
    let mut rest = said;
    while !rest.is_empty() {
        let start = rest.find(|c: char| !is_separator(c)).unwrap_or(rest.len());
        shown.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_separator).unwrap_or(rest.len());
        shown.push_str(&plue_forge::without_credentials(&rest[..end]));
        rest = &rest[end..];
    }
    let line = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "git gave no reason".to_string();
    }
    evaluator::text::quote(&line, REASON_CHARS)
}

fn branch_of(git_ref: &str) -> Option<String> {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        Some(branch.to_string())
    } else if git_ref.starts_with("refs/") || git::is_full_sha(git_ref) {
        None
    } else {
        Some(git_ref.to_string())
    }
}

/// Where a pull request's fork is fetched from: the fork's `owner/name`, read from the
/// payload's URL `fork` only when both parts are plain names ([`fork_name`]), beside the
/// repository on its own forge (`own`, its clone URL, without its userinfo). Nothing else of
/// the payload's text reaches git: no parser's reading of it (a backslash, a percent-escape,
/// a scp-like form) can send the fetch to another host, port, path or transport.
fn fork_url(own: &str, fork: &str) -> Option<String> {
    modules::sibling_url(own, &fork_name(fork)?)
}

/// A fork's `owner/name` from its clone URL (`https://forge/owner/name.git`), when both
/// parts are plain names; `None` otherwise (the run's partition is then named after its
/// pull request).
fn fork_name(url: &str) -> Option<String> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.rsplit('/');
    let name = parts.next()?;
    let owner = parts.next()?;
    parts.next()?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    (plain(owner) && plain(name)).then(|| format!("{owner}/{name}"))
}
#[cfg(test)]
mod tests {
    use super::*;

    // The attack: a pull request's payload names the fork's URL, and the engine fetched it
    // as written — another repository's mirror on the engine's host, an internal address,
    // another transport; a check of the text is not enough (the `url` crate and git's
    // curl read `https://forge\@10.0.0.5/x` and `ssh://evil%2F@forge/x` differently). Only
    // a plain `owner/name` of it is used, beside the repository on its own forge.
    #[test]
    fn a_fork_is_fetched_beside_the_repository_whatever_its_url_says() {
        let github = "https://bot:s3cr3t@github.com/acme/app.git";
        let cases = [
            (
                "https://github.com/mallory/app.git",
                Some("https://github.com/mallory/app.git"),
            ),
            (
                "https://evil.example/mallory/app",
                Some("https://github.com/mallory/app.git"),
            ),
            (
                "https://github.com\\@10.0.0.5:8080/victim/private.git",
                Some("https://github.com/victim/private.git"),
            ),
            (
                "/var/lib/plue/mirrors/3.git",
                Some("https://github.com/mirrors/3.git"),
            ),
            ("ssh://evil.example%2F@github.com/x", None),
            ("ssh://10.0.0.5%3A2222%2F@github.com/x", None),
            ("../ws/z@github.com:q/../../victim", None),
            ("https://github.com/mallory/..", None),
            ("https://github.com/%2e%2e/app", None),
            ("https://github.com/mal lory/app", None),
            ("[git@github.com:2222]:x", None),
            ("git@github.com:app.git", None),
            ("app.git", None),
            ("", None),
        ];
        for (fork, built) in cases {
            assert_eq!(fork_url(github, fork).as_deref(), built, "{fork}");
        }
        // The repository's credentials never go to the fork; a local repository's forks
        // are its siblings; a scp-like clone URL has no `owner/name` to replace.
        assert_eq!(
            fork_url("/srv/git/acme/app.git", "/elsewhere/eve/app.git").as_deref(),
            Some("/srv/git/eve/app.git")
        );
        assert_eq!(
            fork_url("git@forge.example:acme/app.git", "https://x/eve/app"),
            None
        );
    }

    #[test]
    fn a_forks_name_is_taken_from_its_clone_url_only_when_plain() {
        assert_eq!(
            fork_name("https://github.com/eve/hello.git").as_deref(),
            Some("eve/hello")
        );
        assert_eq!(
            fork_name("http://gitea:3000/mallory/hello/").as_deref(),
            Some("mallory/hello")
        );
        for url in [
            "https://github.com/hello.git",
            "https://github.com/eve/../hello.git",
            "https://github.com/eve/hel lo.git",
            "hello",
        ] {
            assert_eq!(fork_name(url), None, "{url}");
        }
    }

    #[test]
    fn cron_fire_times_are_utc() {
        // 2026-01-01T00:00:00Z
        let new_year = 1_767_225_600_000;
        assert_eq!(
            next_fire("0 3 * * *", new_year),
            Some(new_year + 3 * 3_600_000)
        );
        assert_eq!(next_fire("* * * * *", new_year), Some(new_year + 60_000));
        assert_eq!(next_fire("nonsense", new_year), None);
    }

    #[test]
    fn an_unresolved_ref_is_a_sentence_with_gits_reason_only_when_unavailable() {
        let git_says = "fetching 'refs/heads/nope' from /srv/git/app: fatal: couldn't find \
                        remote ref refs/heads/nope";
        let DispatchError::NotFound(missing) = unresolved("acme/app", "nope", git_says) else {
            panic!("not a 404")
        };
        assert_eq!(missing, "acme/app has no branch, tag or commit 'nope'");
        let unreachable = "fatal: unable to access 'https://forge.example/app.git/': \
                           Could not resolve host: forge.example";
        let DispatchError::Unavailable(down) = unresolved("acme/app", "main", unreachable) else {
            panic!("not unavailable")
        };
        // Issue 54: the answer said "the engine's log says why", and that log said nothing at
        // its default level; the answer says why now, in git's words.
        assert_eq!(
            down,
            "acme/app could not be fetched from its forge to read 'main': unable to access \
             'https://forge.example/app.git/': Could not resolve host: forge.example"
        );
        let DispatchError::Rejected(bad) = unresolved("acme/app", "a..b", "") else {
            panic!("not rejected")
        };
        assert_eq!(bad, "'a..b' is not a valid branch, tag or commit name");
        for message in [missing, bad] {
            assert!(
                !message.contains("fatal") && !message.contains("/srv"),
                "{message}"
            );
        }
    }

    #[test]
    fn gits_reason_is_one_line_without_credentials() {
        let why = "fetching 'refs/heads/main' from https://***@forge.example/app.git: git \
                   fetch failed (exit status: 128): remote: denied\nfatal: unable to access \
                   'https://bot:s3cr3t@forge.example/app.git/': The requested URL returned \
                   error: 403\n";
        let reason = git_reason(why);
        assert_eq!(
            reason,
            "unable to access 'https://***@forge.example/app.git/': The requested URL \
             returned error: 403"
        );
        // Without git's `fatal:`, the whole chain, on one line.
        let reason = git_reason("git fetch timed out after 60s\n  at http://u:p@h/x");
        assert_eq!(reason, "git fetch timed out after 60s at http://***@h/x");
        assert_eq!(git_reason(""), "git gave no reason");
        assert!(!git_reason("fatal: a\x1b[2Jb").contains('\x1b'));
        assert!(git_reason(&"x".repeat(1000)).ends_with("(1000 characters)"));
    }

    #[test]
    fn refs_and_names() {
        assert_eq!(full_ref("main"), "refs/heads/main");
        assert_eq!(full_ref("refs/tags/v1"), "refs/tags/v1");
        assert_eq!(branch_of("refs/heads/a/b").as_deref(), Some("a/b"));
        assert_eq!(branch_of("refs/tags/v1"), None);
        assert_eq!(file_stem(".plue/ci.plue.py"), "ci");
    }
}
