//! The workflows of a repository's default branch, as the repository page and
//! `GET /api/repos/{owner}/{name}/workflows` list them: every `*.plue.py` file at the
//! branch's head, evaluated with the `ctx` of a push of that head (what a push evaluates,
//! so a file listed as broken is one whose push run failed), with its plan — triggers,
//! manual inputs — or its evaluation error. Also the commit messages the run page shows.
//!
//! Invariants:
//! - Workflow code runs only in the evaluator's sandbox, through `Registry::evaluate`
//!   (the pool every push uses); nothing here interprets a workflow file.
//! - A listing is computed once per head commit and kept per repository: the head is read
//!   from the forge at most every [`HEAD_TTL`] (at once after a push to the default branch,
//!   [`Registry::forget_workflows`]), and the files are evaluated again only when it moved.
//!   One listing of a repository is computed at a time, so readers arriving together cost
//!   one evaluation per file.
//! - What goes wrong reading the head is a sentence for people ([`Listing::problem`]);
//!   git's own output (which may name hosts and paths) goes to the log only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evaluator::plan::Plan;
use evaluator::{EvalContext, Event};
use plue_store::RepoRow;

use super::Registry;

/// How long a head read from the forge is trusted before it is read again.
pub const HEAD_TTL: Duration = Duration::from_secs(15);
/// How long reading the head may take before the page shows the last listing read.
pub const HEAD_READ_LIMIT: Duration = Duration::from_secs(10);
/// Commit messages kept in memory (they never change: keyed by repository and commit).
const MESSAGES_KEPT: usize = 1024;

/// The workflow files of a default branch's head.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The default branch (`None`: the repository names none, its `HEAD` was read).
    pub branch: Option<String>,
    /// The head commit the files were read at (`None` when it could never be read).
    pub sha: Option<String>,
    /// Every `*.plue.py` file there, by path.
    pub workflows: Vec<Listed>,
    /// Why the head could not be read now, as a sentence; `workflows` then holds the last
    /// listing read (or none).
    pub problem: Option<String>,
}

/// One workflow file and what its evaluation gave.
#[derive(Debug, Clone)]
pub struct Listed {
    pub path: String,
    /// Its plan, or the evaluator's message.
    pub evaluated: Result<Arc<Plan>, String>,
}

/// The listings kept, one slot per repository.
#[derive(Default)]
pub(super) struct Cache {
    slots: std::sync::Mutex<HashMap<i64, Arc<Slot>>>,
    messages: std::sync::Mutex<HashMap<(i64, String), Option<String>>>,
}

#[derive(Default)]
struct Slot {
    /// Held while a listing is computed: one at a time per repository.
    kept: tokio::sync::Mutex<Option<Kept>>,
    /// Set by a push to the default branch: read the head again whatever its age.
    stale: AtomicBool,
}

struct Kept {
    read_at: Instant,
    listing: Arc<Listing>,
}

impl Cache {
    fn slot(&self, repo_id: i64) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(repo_id).or_default().clone()
    }
}

impl Registry {
    /// The workflows of `repo`'s default branch head (kept; see the module's invariants).
    pub async fn default_workflows(&self, repo: &RepoRow) -> Arc<Listing> {
        let slot = self.workflows.slot(repo.id);
        let mut kept = slot.kept.lock().await;
        let stale = slot.stale.swap(false, Ordering::SeqCst);
        if let Some(k) = kept.as_ref() {
            if !stale && k.read_at.elapsed() < HEAD_TTL {
                return k.listing.clone();
            }
        }
        let head_ref = match &repo.default_branch {
            Some(branch) => format!("refs/heads/{branch}"),
            None => "HEAD".to_string(),
        };
        let previous = kept.as_ref().map(|k| k.listing.clone());
        let listing = match self.head(repo, &head_ref).await {
            Ok(sha) if previous.as_ref().and_then(|p| p.sha.as_deref()) == Some(sha.as_str()) => {
                let mut same = (*previous.unwrap_or_default()).clone();
                same.problem = None;
                Arc::new(same)
            }
            Ok(sha) => Arc::new(self.list_at(repo, &head_ref, sha).await),
            Err(problem) => {
                let mut last = previous.map(|p| (*p).clone()).unwrap_or_default();
                last.branch = repo.default_branch.clone();
                last.problem = Some(problem);
                Arc::new(last)
            }
        };
        *kept = Some(Kept {
            read_at: Instant::now(),
            listing: listing.clone(),
        });
        listing
    }

    /// Makes the next [`Registry::default_workflows`] of the repository read its head again
    /// (a push to its default branch).
    pub fn forget_workflows(&self, repo_id: i64) {
        self.workflows
            .slot(repo_id)
            .stale
            .store(true, Ordering::SeqCst);
    }

    /// The message of commit `sha` of `repo` from its mirror (`None` when the mirror does
    /// not hold it, or cannot be read: the run page then shows none).
    pub async fn commit_message(&self, repo: &RepoRow, sha: &str) -> Option<String> {
        let key = (repo.id, sha.to_string());
        if let Some(known) = self.known_message(&key) {
            return known;
        }
        let message = match self.mirror(repo).await {
            Ok(mirror) => mirror.commit_message(sha).await,
            Err(e) => Err(e),
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("{}: reading commit {sha}'s message: {e:#}", repo.name);
                return None;
            }
        };
        // A commit the mirror lacks may be fetched later: only found messages are kept.
        if message.is_some() {
            let mut messages = self
                .workflows
                .messages
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if messages.len() >= MESSAGES_KEPT {
                messages.clear();
            }
            messages.insert(key, message.clone());
        }
        message
    }

    fn known_message(&self, key: &(i64, String)) -> Option<Option<String>> {
        let messages = self
            .workflows
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        messages.get(key).cloned()
    }

    /// The commit `head_ref` names on the forge now (fetched into the mirror), or a
    /// sentence saying why not.
    async fn head(&self, repo: &RepoRow, head_ref: &str) -> Result<String, String> {
        let resolved = async {
            let mirror = self.mirror(repo).await?;
            let lock = self.lock(repo.id);
            let _held = lock.lock().await;
            mirror.resolve(&repo.clone_url, head_ref).await
        };
        // A page waits for the forge this long at most (git is killed when dropped).
        let resolved = match tokio::time::timeout(HEAD_READ_LIMIT, resolved).await {
            Ok(resolved) => resolved,
            Err(_) => Err(anyhow::anyhow!(
                "the forge did not answer within {HEAD_READ_LIMIT:?}"
            )),
        };
        resolved.map_err(|e| {
            tracing::warn!("{}: reading {head_ref}: {e:#}", repo.name);
            match &repo.default_branch {
                Some(branch) => format!(
                    "The default branch '{branch}' could not be read from the repository's forge \
                     (the engine's log says why)."
                ),
                None => "The repository's default branch could not be read from its forge \
                         (the engine's log says why)."
                    .to_string(),
            }
        })
    }

    /// Every workflow file at `sha`, evaluated.
    async fn list_at(&self, repo: &RepoRow, head_ref: &str, sha: String) -> Listing {
        let mut listing = Listing {
            branch: repo.default_branch.clone(),
            sha: Some(sha.clone()),
            ..Listing::default()
        };
        let files = match self.mirror(repo).await {
            Ok(mirror) => mirror.workflow_files(&sha).await,
            Err(e) => Err(e),
        };
        let files = match files {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!("{}: listing the workflow files at {sha}: {e:#}", repo.name);
                listing.problem = Some(format!(
                    "The workflow files at {:.12} could not be read (the engine's log says why).",
                    sha
                ));
                return listing;
            }
        };
        let ctx = push_context(repo, head_ref, &sha);
        let evaluations =
            futures::future::join_all(files.iter().map(|file| self.evaluate(file, &ctx))).await;
        listing.workflows = files
            .into_iter()
            .zip(evaluations)
            .map(|(file, evaluated)| Listed {
                path: file.path,
                evaluated: evaluated.map(|e| Arc::new(e.plan)),
            })
            .collect();
        listing
    }
}

/// The `ctx` of a push of `sha` to `head_ref` (no changed files: the files are listed, not
/// matched).
fn push_context(repo: &RepoRow, head_ref: &str, sha: &str) -> EvalContext {
    EvalContext {
        event: Event::Push,
        repo: repo.name.clone(),
        git_ref: head_ref.to_string(),
        branch: head_ref.strip_prefix("refs/heads/").map(String::from),
        sha: sha.to_string(),
        pr: None,
        changed_files: Vec::new(),
        inputs: Default::default(),
        issue: None,
        comment: None,
    }
}
