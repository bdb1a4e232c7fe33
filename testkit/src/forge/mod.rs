//! A local fake forge for tests and examples: the REST shapes of GitHub (v3) or Gitea (v1)
//! that a bot needs to hand back an agent's work, and a real git remote over HTTP.
//!
//! - [`FakeForge`] serves one [`Flavor`] on `127.0.0.1:<port>`: the API under
//!   [`FakeForge::api_url`] (`/api/v3` for GitHub, as GitHub Enterprise Server does;
//!   `/api/v1` for Gitea, which is also what Plue derives from a Gitea clone URL) and the
//!   repositories it hosts as bare git repositories at `{url}/{owner}/{name}.git`, served by
//!   `git http-backend` as CGI (module `git_http`), so `git push`/`git fetch` speak the real
//!   smart protocol.
//! - The REST handlers (module `api`) answer like the real servers, status codes and error
//!   bodies included: a second pull request for the same head and base is GitHub's `422
//!   Validation Failed` or Gitea's `409` with `{"message", "url"}`; a comment on an unknown
//!   issue is `404`; a request without the token is `401`.
//! - Every request is recorded before it is answered ([`FakeForge::requests`]), git ones
//!   too (without their bodies), so tests assert on headers (the token only ever in
//!   `Authorization`) and bodies afterwards; an API request's answer (status, body,
//!   headers) is recorded with it ([`Recorded::answer`]) just before it is sent.
//! - [`Fault`]s are scripted per method and path: answer a status without doing anything,
//!   or do the write and then drop the connection unanswered (a forge that created the pull
//!   request but whose answer was lost: what idempotence must survive). A pull request's
//!   creation is refused with `Fault::new("POST", "/pulls", FaultAction::Status(422))`;
//!   [`FakeForge::refuse_pushes`] makes a repository refuse every push as a forge's rule
//!   does (`! [remote rejected]`, with the forge's message).
//! - `GET /user` names the token's account, `plue-bot` (the author of what the API
//!   creates); [`FakeForge::whoami_fails`] makes it answer an error from then on, as
//!   GitHub does to an App's installation token (403).
//!
//! What was checked against the real APIs (and what was not):
//! - GitHub: the operations and their status codes come from github/rest-api-description
//!   (`descriptions/api.github.com/api.github.com.json`, version `0000036e42b5`): create
//!   PR 201 / 422 `validation_failed`, list PRs `?head=owner:branch&base=&state=`, comment
//!   201, labels 200 with the issue's labels (GitHub creates unknown labels), collaborator
//!   permission 200 `{permission, role_name, user}` / 404. The 422 body's
//!   `errors[0].message` ("A pull request already exists for owner:branch.") is the API's
//!   known text, not in the spec.
//! - Gitea: read in go-gitea/gitea `routers/api/v1/repo/pull.go` (stored version
//!   `000762f8db28`): create PR answers `201`, and `409` (`ctx.APIError(StatusConflict,
//!   ErrPullRequestAlreadyExists)`: body `{"message": "pull request already exists for these
//!   targets [...]", "url": ...}`) for an unmerged one with the same head and base; `422`
//!   when head equals base; a PR is found by head with `GET
//!   /repos/{owner}/{repo}/pulls/{base}/{head}` (200 or 404; the list takes `state` and
//!   `base_branch` but no head). `IssueLabelsOption.labels` takes label IDs or names
//!   (`modules/structs/issue_label.go`). Not read, so assumed like GitHub's: the 200 of
//!   adding labels (the issue's labels), unknown label names being ignored, and the
//!   collaborator permission body `{permission, role_name, user}`.
//! - Both: commit statuses `POST /repos/{owner}/{repo}/statuses/{sha}` answer 201.
//! - GitHub's Checks API (module `checks`): check runs created, updated (annotations
//!   appended, at most 50 a request) and listed, validated as GitHub validates them.
//! - GitHub, checked by a test on every run (`forge/tests/github_api_description.rs`, with
//!   [`crate::api_description`]) against GitHub's own OpenAPI description of api.github.com
//!   as npm's `@octokit/openapi` **23.0.2** ships it (`generated/api.github.com.json`,
//!   OpenAPI 3.0.3): every exchange of Plue's GitHub client with this fake — method and
//!   path, query and path parameters, JSON request bodies, status codes and answer
//!   bodies — and the fields the client reads from each answer (present, required and
//!   non-null where it needs them). Operations covered: `repos/create-commit-status`,
//!   `pulls/create` (201, 422), `pulls/list`, `pulls/get` (200, 404),
//!   `issues/create-comment`, `issues/list-comments`, `issues/add-labels`,
//!   `issues/create`, `issues/list-for-repo`, `users/get-authenticated` (200, 403),
//!   `repos/get-collaborator-permission-level` (200, 404); in the App mode
//!   `apps/get-authenticated`, `apps/get-repo-installation` (200, 404),
//!   `apps/create-installation-access-token` (201, 403), `checks/list-for-ref`,
//!   `checks/create`, `checks/get`, `checks/update`. So the GitHub flavor answers
//!   in the schemas' full shapes (module `github_json`: `pull-request` with its
//!   `repository`s, `issue`, `issue-comment`, `label`, `status`, `public-user`,
//!   `nullable-collaborator`, `integration`); before, it answered a subset the
//!   description refuses (e.g. `{"login"}` for a user, a status without `url`, `creator`,
//!   times).
//! - Gitea is checked against no description: no package of npm or PyPI ships Gitea's
//!   `swagger.v1.json` (see [`crate::api_description`]).
//!
//! Invariants: the server runs on its own thread and runtime (synchronous tests that block
//! on a `plue` child use it too); dropping it stops it and deletes the repositories; issue
//! and pull request numbers share one sequence per repository, as on both forges.
//!
//! Why one file past ~600 lines: an eighth of it is this doc (what was checked against
//! the real APIs, and what was not); the rest is the fake's state and the methods of
//! [`FakeForge`] tests drive — its REST handlers, git remote and check runs are modules of
//! their own.

mod answer;
mod api;
pub mod app;
mod checks;
mod git_http;
mod github_json;
pub(crate) mod query;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::server_thread::ServerThread;
pub use checks::{CheckRun, CheckRunAnnotation};

/// Which forge's API to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    GitHub,
    Gitea,
}

impl Flavor {
    pub fn parse(name: &str) -> Option<Flavor> {
        match name {
            "github" => Some(Flavor::GitHub),
            "gitea" => Some(Flavor::Gitea),
            _ => None,
        }
    }

    /// The API's path prefix on this server.
    pub fn api_prefix(self) -> &'static str {
        match self {
            Flavor::GitHub => "/api/v3",
            Flavor::Gitea => "/api/v1",
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    pub query: String,
    /// Header names lowercased; the last value of repeated ones.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::Null` when it was not JSON, and for git requests).
    pub body: Value,
    /// What the API answered (`None` for git requests, and while it is being answered).
    pub answer: Option<Answered>,
}

/// An answer of the fake's REST API, as sent.
#[derive(Debug, Clone)]
pub struct Answered {
    pub status: u16,
    pub body: Value,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What a scripted fault does to the request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status (with a JSON `message`) and do nothing.
    Status(u16),
    /// Do what the request asks, then close the connection without an answer.
    DropAfterWrite,
}

/// A scripted fault: the next `times` requests with this method whose path ends with
/// `path_suffix` get `action` instead of the normal answer.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub path_suffix: String,
    pub action: FaultAction,
    pub times: u32,
}

impl Fault {
    pub fn new(method: &str, path_suffix: &str, action: FaultAction) -> Fault {
        Fault {
            method: method.to_string(),
            path_suffix: path_suffix.to_string(),
            action,
            times: 1,
        }
    }
}

/// A pull request as the fake stores it.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    /// The head branch's commit when the pull request was opened.
    pub head_sha: String,
    pub base_sha: String,
    pub state: String,
    pub author: String,
}

/// An issue (not a pull request).
#[derive(Debug, Clone)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub author: String,
}

/// A comment on an issue or a pull request.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub author: String,
}

/// A commit status somebody posted.
#[derive(Debug, Clone)]
pub struct Status {
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
}

#[derive(Debug, Default)]
pub(crate) struct RepoState {
    /// The next issue or pull request number (shared, as on both forges).
    pub(crate) next_number: u64,
    pub(crate) pulls: Vec<PullRequest>,
    pub(crate) issues: Vec<Issue>,
    pub(crate) comments: Vec<Comment>,
    /// Labels defined in the repository: (id, name).
    pub(crate) labels: Vec<(u64, String)>,
    /// Labels on each issue or pull request, by number.
    pub(crate) issue_labels: BTreeMap<u64, Vec<String>>,
    pub(crate) statuses: Vec<Status>,
    /// Check runs (GitHub only), in the order they were created.
    pub(crate) check_runs: Vec<CheckRun>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) flavor: Flavor,
    pub(crate) url: String,
    pub(crate) token: String,
    /// The token's user: the author of what the API creates.
    pub(crate) bot: String,
    pub(crate) root: PathBuf,
    pub(crate) repos: BTreeMap<String, RepoState>,
    /// `login -> permission` (`admin`, `write`, `read`, `none`); others are unknown (404).
    /// The bot's is the token's own: on Gitea, below `admin` it may ask only its own.
    pub(crate) users: BTreeMap<String, String>,
    pub(crate) requests: Vec<Recorded>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) next_id: u64,
    /// The GitHub App mode ([`FakeForge::enable_app`]); `None`: personal tokens.
    pub(crate) app: Option<app::AppMode>,
    /// Repositories whose name another repository took ([`FakeForge::give_name_to`]): the
    /// forge id their name has now, instead of the one derived from the name.
    pub(crate) repo_ids: BTreeMap<String, u64>,
}

impl Shared {
    /// The forge id of the repository `repo` (`owner/name`) names now.
    pub(crate) fn repo_id(&self, repo: &str) -> u64 {
        self.repo_ids
            .get(repo)
            .copied()
            .unwrap_or_else(|| github_json::repository_id(repo))
    }
}

pub(crate) type SharedState = Arc<Mutex<Shared>>;

pub(crate) fn lock(shared: &SharedState) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake forge; see the module doc. Stops when dropped.
pub struct FakeForge {
    url: String,
    flavor: Flavor,
    shared: SharedState,
    /// Declared before `_dir`: the server stops before its repositories go.
    _server: ServerThread,
    /// Holds the hosted repositories; `None` when the caller gave the directory.
    _dir: Option<tempfile::TempDir>,
}

impl FakeForge {
    /// A forge of `flavor` on `127.0.0.1:<free port>` that accepts `token` (the bot
    /// `plue-bot`'s), hosting its repositories in a temporary directory.
    pub fn start(flavor: Flavor, token: &str) -> Result<FakeForge> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let dir = tempfile::Builder::new()
            .prefix("plue-forge-")
            .tempdir()
            .context("creating the fake forge's directory")?;
        let root = dir.path().to_owned();
        let mut forge = FakeForge::serve(listener, flavor, token, root)?;
        forge._dir = Some(dir);
        Ok(forge)
    }

    /// Serves on `listener` (bound by the caller), hosting repositories under `root`.
    pub fn serve(
        listener: std::net::TcpListener,
        flavor: Flavor,
        token: &str,
        root: PathBuf,
    ) -> Result<FakeForge> {
        listener.set_nonblocking(true).context("non-blocking")?;
        let addr: SocketAddr = listener.local_addr().context("local address")?;
        let url = format!("http://{addr}");
        let shared: SharedState = Arc::new(Mutex::new(Shared {
            flavor,
            url: url.clone(),
            token: token.to_string(),
            bot: "plue-bot".into(),
            root,
            repos: BTreeMap::new(),
            // Plue's account pushes, comments and opens pull requests: write. Gitea tells
            // other users' permissions only to the repository's admins (and site admins),
            // so a Gitea deployment makes it an admin of the repository.
            users: BTreeMap::from([(
                "plue-bot".to_string(),
                match flavor {
                    Flavor::GitHub => "write",
                    Flavor::Gitea => "admin",
                }
                .to_string(),
            )]),
            requests: Vec::new(),
            faults: Vec::new(),
            next_id: 1000,
            app: None,
            repo_ids: BTreeMap::new(),
        }));
        let app = axum::Router::new()
            .fallback(api::handle)
            .with_state(shared.clone());
        let server = ServerThread::spawn("fake-forge", "fake forge", listener, app)
            .context("starting the fake forge thread")?;
        Ok(FakeForge {
            url,
            flavor,
            shared,
            _server: server,
            _dir: None,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Where the REST API is: `{url}/api/v3` (GitHub) or `{url}/api/v1` (Gitea).
    pub fn api_url(&self) -> String {
        format!("{}{}", self.url, self.flavor.api_prefix())
    }

    /// `{url}/{owner}/{name}.git`: the repository's clone URL (fetches need no token,
    /// pushes do).
    pub fn clone_url(&self, repo: &str) -> String {
        format!("{}/{repo}.git", self.url)
    }

    /// The bare repository on disk (for tests that read it with git).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        lock(&self.shared).root.join(format!("{repo}.git"))
    }

    /// The name `repo` (`owner/name`) now belongs to another repository, forge id `id` (an
    /// organisation renamed, a repository deleted and re-created by someone else): the API
    /// and new installation tokens name that id; git still serves the same directory, as a
    /// public repository's would be served to any token.
    pub fn give_name_to(&self, repo: &str, id: u64) {
        lock(&self.shared).repo_ids.insert(repo.to_string(), id);
    }

    /// The forge id the name `repo` has now.
    pub fn repository_id(&self, repo: &str) -> u64 {
        lock(&self.shared).repo_id(repo)
    }

    /// Creates `owner/name` as an empty bare repository whose HEAD is `main`.
    pub fn create_repo(&self, repo: &str) -> Result<PathBuf> {
        let Some((owner, name)) = repo.split_once('/') else {
            bail!("repository '{repo}' is not owner/name");
        };
        if !query::is_name(owner) || !query::is_name(name) {
            bail!("repository '{repo}' has an odd name");
        }
        let dir = self.repo_dir(repo);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        git(&dir, &["init", "-q", "--bare", "-b", "main", "."])?;
        lock(&self.shared)
            .repos
            .entry(repo.to_string())
            .or_insert_with(|| RepoState {
                next_number: 1,
                ..RepoState::default()
            });
        Ok(dir)
    }

    /// Creates `repo` with one commit on `main` holding `files` (path, content); returns
    /// the commit's sha.
    pub fn create_repo_with(&self, repo: &str, files: &[(&str, &str)]) -> Result<String> {
        let dir = self.create_repo(repo)?;
        let work = tempfile::tempdir().context("a work tree for the first commit")?;
        for (path, content) in files {
            let file = work.path().join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content)?;
        }
        commit_tree_to(&dir, work.path(), "main", None)
    }

    /// Commits `files` (path, content) on top of `parent` (a branch) to `branch` of
    /// `repo`, directly in the bare repository (as a push would); returns the commit.
    pub fn commit_files(
        &self,
        repo: &str,
        branch: &str,
        parent: &str,
        files: &[(&str, &str)],
    ) -> Result<String> {
        let dir = self.repo_dir(repo);
        let parent = self
            .branch_sha(repo, parent)
            .with_context(|| format!("{repo} has no branch {parent}"))?;
        let work = tempfile::tempdir().context("a work tree")?;
        git(work.path(), &["init", "-q"])?;
        let fetched = Command::new("git")
            .args(["-C"])
            .arg(work.path())
            .args(["fetch", "-q"])
            .arg(&dir)
            .arg(&parent)
            .status()
            .context("fetching the parent")?;
        if !fetched.success() {
            bail!("fetching {parent} from {}", dir.display());
        }
        git(work.path(), &["checkout", "-q", &parent])?;
        for (path, content) in files {
            let file = work.path().join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file, content)?;
        }
        commit_tree_to(&dir, work.path(), branch, Some(&parent))
    }

    /// Creates `repo` with one commit on `main` holding the files under `seed`.
    pub fn create_repo_from(&self, repo: &str, seed: &Path) -> Result<String> {
        let dir = self.create_repo(repo)?;
        commit_tree_to(&dir, seed, "main", None)
    }

    /// The commit `branch` points at, if it exists.
    pub fn branch_sha(&self, repo: &str, branch: &str) -> Option<String> {
        api::branch_sha(&self.repo_dir(repo), branch)
    }

    /// Opens issue `title` in `repo` as `author`; returns its number.
    pub fn create_issue(&self, repo: &str, title: &str, body: &str, author: &str) -> u64 {
        let mut shared = lock(&self.shared);
        let state = shared.repos.entry(repo.to_string()).or_default();
        let number = state.next_number.max(1);
        state.next_number = number + 1;
        state.issues.push(Issue {
            number,
            title: title.into(),
            body: body.into(),
            author: author.into(),
        });
        number
    }

    /// Defines a label in `repo`; returns its id.
    pub fn create_label(&self, repo: &str, name: &str) -> u64 {
        let mut shared = lock(&self.shared);
        shared.next_id += 1;
        let id = shared.next_id;
        shared
            .repos
            .entry(repo.to_string())
            .or_default()
            .labels
            .push((id, name.into()));
        id
    }

    /// Makes `login` known with `permission` (`admin`, `write`, `read`, `none`).
    pub fn set_permission(&self, login: &str, permission: &str) {
        lock(&self.shared)
            .users
            .insert(login.into(), permission.into());
    }

    /// From now on `GET /user` answers `status` (with the flavor's error body), as GitHub
    /// answers 403 to a GitHub App's installation token.
    pub fn whoami_fails(&self, status: u16) {
        self.fault(Fault {
            times: u32::MAX,
            ..Fault::new(
                "GET",
                &format!("{}/user", self.flavor.api_prefix()),
                FaultAction::Status(status),
            )
        });
    }

    /// From now on every push to `repo` is refused the way a forge refuses an update it
    /// received (a protected branch, a rule, a hook): a `pre-receive` hook prints `message`
    /// (the client shows it as `remote: …`) and declines, so git reports `! [remote
    /// rejected] … (pre-receive hook declined)` and nothing is updated.
    pub fn refuse_pushes(&self, repo: &str, message: &str) -> Result<()> {
        let hooks = self.repo_dir(repo).join("hooks");
        std::fs::create_dir_all(&hooks).with_context(|| format!("creating {}", hooks.display()))?;
        std::fs::write(hooks.join("refusal.txt"), format!("{message}\n"))?;
        let hook = hooks.join("pre-receive");
        std::fs::write(
            &hook,
            "#!/bin/sh\ncat >/dev/null\ncat \"$(dirname \"$0\")/refusal.txt\" >&2\nexit 1\n",
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", hook.display()))
    }

    /// Adds a scripted fault.
    pub fn fault(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    pub fn pulls(&self, repo: &str) -> Vec<PullRequest> {
        self.read(repo, |state| state.pulls.clone())
    }

    pub fn issues(&self, repo: &str) -> Vec<Issue> {
        self.read(repo, |state| state.issues.clone())
    }

    /// Every comment of `repo`, in the order they were made.
    pub fn comments(&self, repo: &str) -> Vec<Comment> {
        self.read(repo, |state| state.comments.clone())
    }

    /// The labels on issue or pull request `number`.
    pub fn labels_of(&self, repo: &str, number: u64) -> Vec<String> {
        self.read(repo, |state| {
            state.issue_labels.get(&number).cloned().unwrap_or_default()
        })
    }

    pub fn statuses(&self, repo: &str) -> Vec<Status> {
        self.read(repo, |state| state.statuses.clone())
    }

    /// Every check run of `repo` (GitHub), with its annotations, in the order created.
    pub fn check_runs(&self, repo: &str) -> Vec<CheckRun> {
        self.read(repo, |state| state.check_runs.clone())
    }

    fn read<T: Default>(&self, repo: &str, f: impl FnOnce(&RepoState) -> T) -> T {
        lock(&self.shared)
            .repos
            .get(repo)
            .map(f)
            .unwrap_or_default()
    }
}

/// Commits the files of `work` (on top of `parent`, or as a first commit) to `branch` of
/// the bare repository `dir`, with a private index; returns the commit. `.git` in `work`
/// is never committed.
fn commit_tree_to(dir: &Path, work: &Path, branch: &str, parent: Option<&str>) -> Result<String> {
    let index_dir = tempfile::tempdir().context("a directory for a temporary index")?;
    let index = index_dir.path().join("index");
    let env = [
        ("GIT_DIR", dir.as_os_str()),
        ("GIT_WORK_TREE", work.as_os_str()),
        ("GIT_INDEX_FILE", index.as_os_str()),
    ];
    let run = |args: &[&str]| -> Result<String> {
        let output = Command::new("git")
            .args(args)
            .envs(env)
            .env("GIT_AUTHOR_NAME", "Fake Forge")
            .env("GIT_AUTHOR_EMAIL", "forge@example.invalid")
            .env("GIT_COMMITTER_NAME", "Fake Forge")
            .env("GIT_COMMITTER_EMAIL", "forge@example.invalid")
            .output()
            .with_context(|| format!("running git {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    run(&["add", "-A", "."])?;
    let tree = run(&["write-tree"])?;
    let commit = match parent {
        Some(parent) => run(&["commit-tree", &tree, "-p", parent, "-m", "change"])?,
        None => run(&["commit-tree", &tree, "-m", "initial commit"])?,
    };
    run(&["update-ref", &format!("refs/heads/{branch}"), &commit])?;
    Ok(commit)
}

/// Runs git in `dir`, failing with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "git {} in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests;
