//! Webhook payloads of GitHub and Gitea, read into one [`ForgeEvent`]. Pure: bytes and
//! header values in, an event or a [`PayloadError`] out.
//!
//! Invariants:
//! - Only the fields Plue needs are read; every other field, known or not, is ignored, so
//!   whatever body the forge sends parses as long as those fields are there.
//! - A pull request counts as coming from a fork unless the payload shows its head
//!   repository is the base repository (by full name or, for Gitea, by repository id): a
//!   payload that does not say is treated as a fork, so its runs get no secrets.
//! - Gitea's `synchronized` action is reported as GitHub's `synchronize`, and its label
//!   changes (`label_updated`, `label_cleared`, on issues and pull requests alike) as
//!   `labeled` and `unlabeled`, so workflows name one set of actions.
//! - The actor of an event is the forge login the forge itself reports (GitHub:
//!   `sender.login`, else `pusher.name`; Gitea: `pusher.login`, else `sender.login`; a pull
//!   request's author `pull_request.user.login`); a login that is not one a forge allows is
//!   dropped, never trusted as some other name.
//! - Every other login the payload names for the event (the `sender` of a pull request's
//!   `synchronize` who pushed onto somebody else's branch, a pusher and sender that
//!   disagree) is kept in `co_actors`: each of them started the run too, so none of them
//!   decides its gates with `exclude_triggerer`.
//!
//! Why one file past ~600 lines: one reader per event kind and forge over shared field
//! readers (actors, forks, refs), with the tests that run every real fixture through them;
//! the rules about who caused an event are shared by all kinds.

pub mod installation;

use serde::Deserialize;

use super::Forge;
pub use installation::InstallationEvent;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// What a delivery asks of Plue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    /// The forge checks the hook works.
    Ping {
        repo: Option<String>,
    },
    Push(Push),
    PullRequest(PullRequestEvent),
    /// An issue was opened, labeled, ... (`issues`).
    Issue(IssueEvent),
    /// A comment on an issue or a pull request's conversation (`issue_comment`).
    Comment(CommentEvent),
    /// A GitHub App's `installation` or `installation_repositories` event: the App was
    /// installed, suspended, removed, or given other repositories. Names no repository of
    /// its own; signed with the App's webhook secret.
    Installation(InstallationEvent),
    /// Gitea's `delete` event (a branch or tag was deleted): starts nothing.
    Delete {
        repo: String,
        ref_type: String,
    },
    /// An event Plue does not act on (issues, stars, ...).
    Ignored {
        repo: Option<String>,
        event: String,
    },
}

/// Facts about the repository a delivery carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFacts {
    pub full_name: String,
    pub default_branch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub repo: RepoFacts,
    /// The full ref, `refs/heads/x` or `refs/tags/v1`.
    pub git_ref: String,
    /// `None` when the ref is new.
    pub before: Option<String>,
    /// `None` when the ref was deleted.
    pub after: Option<String>,
    /// Files added, modified or removed by the pushed commits, as the payload lists them
    /// (`None` when it lists no commits, e.g. a new branch on Gitea).
    pub changed_files: Option<Vec<String>>,
    /// The forge login of who pushed, when the payload names a valid one.
    pub actor: Option<String>,
    /// Other valid logins the payload names as pushing (pusher and sender disagreeing).
    pub co_actors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub repo: RepoFacts,
    /// `opened`, `synchronize`, `reopened`, `closed`, ...
    pub action: String,
    pub number: u64,
    pub base_ref: String,
    pub base_sha: String,
    pub head_ref: String,
    pub head_sha: String,
    /// Where the head commits live when that is another repository (a fork).
    pub head_clone_url: Option<String>,
    pub from_fork: bool,
    /// The forge login of the pull request's author, when the payload names a valid one.
    pub actor: Option<String>,
    /// The event's `sender` when it is somebody else (who pushed the `synchronize`,
    /// reopened the pull request, ...): it started the run too.
    pub co_actors: Vec<String>,
    /// The pull request's title (empty when the payload has none): its author's text.
    pub title: String,
}

/// An issue (or pull request) as an `issues` or `issue_comment` payload shows it. Its
/// text is whatever its author wrote (NUL replaced by U+FFFD, nothing else changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueFacts {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// The issue author's login (empty when the payload names no valid one).
    pub author: String,
    /// The issue's page (`html_url`).
    pub url: String,
    /// The thread is a pull request's (GitHub: `issue.pull_request` set; Gitea: `is_pull`
    /// or `issue.pull_request` set).
    pub is_pull_request: bool,
}

/// Who caused an `issues` or `issue_comment` event, as the forge says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// A valid forge login, or `None` (then nobody may summon).
    pub login: Option<String>,
    /// GitHub's `author_association` of this login, when the payload gives one for it
    /// (`OWNER`, `MEMBER`, `COLLABORATOR`, ...). Gitea gives none.
    pub association: Option<String>,
    /// The forge marks the account a bot (GitHub `type: "Bot"`).
    pub bot: bool,
}

/// `issues`: an issue was opened, labeled, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueEvent {
    pub repo: RepoFacts,
    /// GitHub's action names; Gitea's `label_updated` is `labeled`, `label_cleared`
    /// `unlabeled`.
    pub action: String,
    pub issue: IssueFacts,
    /// The label the event added or removed, when the forge says which (GitHub).
    pub label: Option<String>,
    /// The `sender`: whoever caused the event (opened the issue, added the label).
    pub sender: Author,
}

/// `issue_comment`: a comment was created, edited or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentEvent {
    pub repo: RepoFacts,
    /// `created`, `edited` or `deleted`.
    pub action: String,
    pub issue: IssueFacts,
    pub comment_id: u64,
    pub body: String,
    /// The commenter (`comment.user`, with `comment.author_association`).
    pub commenter: Author,
    /// The event's `sender` when it is not the commenter (who edited or deleted somebody's
    /// comment).
    pub sender: Option<Author>,
}

/// Why a delivery's body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("{event} payload: {problem}")]
    Invalid { event: String, problem: String },
}

#[derive(Deserialize)]
struct RepositoryJson {
    full_name: String,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct CommitJson {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Deserialize)]
struct PushJson {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Option<Vec<CommitJson>>,
    repository: RepositoryJson,
    #[serde(default)]
    pusher: Option<AccountJson>,
    #[serde(default)]
    sender: Option<AccountJson>,
}

/// A forge account as payloads name it: GitHub's `pusher` has a `name` (the login) and no
/// `login`; every other account object has `login`.
#[derive(Deserialize)]
struct AccountJson {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl AccountJson {
    fn login(&self) -> Option<String> {
        self.login.clone().filter(|l| valid_login(l))
    }
}

/// Whether `login` is one a forge could have given (GitHub and Gitea logins are ASCII
/// letters, digits, `-`, `_` and `.`; a GitHub App's bot is `<slug>[bot]`, the account
/// its installation tokens write as — the engine's own, when it is the App), so an odd
/// payload never records an odd name.
fn valid_login(login: &str) -> bool {
    plue_store::valid_name(login.strip_suffix("[bot]").unwrap_or(login))
}

/// Who pushed: GitHub's `sender` is the account, its `pusher.name` the same login; Gitea
/// names the pusher's `login`.
fn push_actor(
    forge: Forge,
    pusher: Option<&AccountJson>,
    sender: Option<&AccountJson>,
) -> (Option<String>, Vec<String>) {
    let pusher_login = pusher.and_then(|p| match forge {
        Forge::GitHub => p.name.clone().filter(|l| valid_login(l)),
        Forge::Gitea => p.login(),
    });
    let sender_login = sender.and_then(AccountJson::login);
    let (first, second) = match forge {
        Forge::GitHub => (sender_login, pusher_login),
        Forge::Gitea => (pusher_login, sender_login),
    };
    match first {
        Some(actor) => (Some(actor.clone()), others(&actor, second)),
        None => (second, Vec::new()),
    }
}

/// `logins` that are not `actor` (in any case), deduplicated.
fn others(actor: &str, logins: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut others: Vec<String> = Vec::new();
    for login in logins {
        if !login.eq_ignore_ascii_case(actor)
            && !others.iter().any(|o| o.eq_ignore_ascii_case(&login))
        {
            others.push(login);
        }
    }
    others
}

#[derive(Deserialize)]
struct BranchJson {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    #[serde(default)]
    repo: Option<HeadRepoJson>,
    #[serde(default)]
    repo_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct HeadRepoJson {
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    clone_url: Option<String>,
}

#[derive(Deserialize)]
struct PullRequestJson {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    title: Option<String>,
    base: BranchJson,
    head: BranchJson,
    #[serde(default)]
    user: Option<AccountJson>,
}

#[derive(Deserialize)]
struct PullRequestEventJson {
    action: String,
    #[serde(default)]
    number: Option<u64>,
    pull_request: PullRequestJson,
    repository: RepositoryJson,
    #[serde(default)]
    sender: Option<AccountJson>,
}

/// An account with what issue payloads say about it.
#[derive(Deserialize)]
struct UserJson {
    #[serde(default)]
    login: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl UserJson {
    fn author(&self, association: Option<&str>) -> Author {
        Author {
            login: self.login.clone().filter(|l| valid_login(l)),
            association: association.map(str::to_string),
            bot: self.kind.as_deref() == Some("Bot"),
        }
    }
}

#[derive(Deserialize)]
struct LabelJson {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct IssueJson {
    number: u64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Option<Vec<LabelJson>>,
    #[serde(default)]
    user: Option<UserJson>,
    #[serde(default)]
    author_association: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IssuesJson {
    action: String,
    issue: IssueJson,
    #[serde(default)]
    label: Option<LabelJson>,
    repository: RepositoryJson,
    #[serde(default)]
    sender: Option<UserJson>,
}

#[derive(Deserialize)]
struct CommentJson {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    user: Option<UserJson>,
    #[serde(default)]
    author_association: Option<String>,
}

#[derive(Deserialize)]
struct IssueCommentJson {
    action: String,
    issue: IssueJson,
    comment: CommentJson,
    repository: RepositoryJson,
    #[serde(default)]
    sender: Option<UserJson>,
    /// Gitea's: the thread is a pull request's.
    #[serde(default)]
    is_pull: Option<bool>,
}

#[derive(Deserialize)]
struct DeleteJson {
    #[serde(default)]
    ref_type: String,
    repository: RepositoryJson,
}

#[derive(Deserialize)]
struct AnyJson {
    #[serde(default)]
    repository: Option<RepositoryJson>,
}

/// Reads a delivery of `event` (the value of `X-GitHub-Event` / `X-Gitea-Event`).
pub fn parse(forge: Forge, event: &str, body: &[u8]) -> Result<ForgeEvent, PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(PayloadError::Json("expected a JSON object".into()));
    }
    let invalid = |e: serde_json::Error| PayloadError::Invalid {
        event: event.to_string(),
        problem: e.to_string(),
    };
    match event {
        "ping" => {
            let any: AnyJson = serde_json::from_value(value).map_err(invalid)?;
            Ok(ForgeEvent::Ping {
                repo: any.repository.map(|r| r.full_name),
            })
        }
        "push" => {
            let push = read_push(forge, serde_json::from_value(value).map_err(invalid)?);
            let shas: Vec<&str> = push
                .before
                .iter()
                .chain(&push.after)
                .map(String::as_str)
                .collect();
            check_names(event, &shas, &[&push.git_ref])?;
            Ok(ForgeEvent::Push(push))
        }
        "pull_request" => {
            let pr: PullRequestEventJson = serde_json::from_value(value).map_err(invalid)?;
            let pr = read_pull_request(forge, pr)?;
            check_names(
                event,
                &[&pr.head_sha, &pr.base_sha],
                &[&pr.head_ref, &pr.base_ref],
            )?;
            Ok(ForgeEvent::PullRequest(pr))
        }
        "issues" => {
            let issue: IssuesJson = serde_json::from_value(value).map_err(invalid)?;
            Ok(ForgeEvent::Issue(read_issue_event(forge, issue)))
        }
        "issue_comment" => {
            let comment: IssueCommentJson = serde_json::from_value(value).map_err(invalid)?;
            Ok(ForgeEvent::Comment(read_comment_event(comment)))
        }
        "installation" | "installation_repositories" if forge == Forge::GitHub => {
            installation::read(event, value).map(ForgeEvent::Installation)
        }
        "delete" => {
            let delete: DeleteJson = serde_json::from_value(value).map_err(invalid)?;
            Ok(ForgeEvent::Delete {
                repo: delete.repository.full_name,
                ref_type: delete.ref_type,
            })
        }
        other => {
            let any: AnyJson = serde_json::from_value(value).map_err(invalid)?;
            Ok(ForgeEvent::Ignored {
                repo: any.repository.map(|r| r.full_name),
                event: other.to_string(),
            })
        }
    }
}

/// Text an author wrote, as it is but for NUL (which no environment variable or database
/// text can hold), replaced by U+FFFD.
fn text(value: Option<String>) -> String {
    let value = value.unwrap_or_default();
    if value.contains('\0') {
        value.replace('\0', "\u{fffd}")
    } else {
        value
    }
}

fn issue_facts(issue: IssueJson, is_pull: Option<bool>) -> IssueFacts {
    // GitHub sets `issue.pull_request` (an object) only on pull requests; Gitea sends
    // `null` on issues and says `is_pull` on comments.
    let pull_field = issue.pull_request.as_ref().is_some_and(|v| !v.is_null());
    IssueFacts {
        number: issue.number,
        title: text(issue.title),
        body: text(issue.body),
        labels: issue
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|l| text(Some(l.name)))
            .collect(),
        author: issue
            .user
            .as_ref()
            .and_then(|u| u.login.clone())
            .filter(|l| valid_login(l))
            .unwrap_or_default(),
        url: text(issue.html_url),
        is_pull_request: is_pull.unwrap_or(false) || pull_field,
    }
}

fn read_issue_event(forge: Forge, event: IssuesJson) -> IssueEvent {
    let action = match (forge, event.action.as_str()) {
        (Forge::Gitea, "label_updated") => "labeled".to_string(),
        (Forge::Gitea, "label_cleared") => "unlabeled".to_string(),
        (_, action) => action.to_string(),
    };
    // The association in an `issues` payload is the issue author's: it tells about the
    // sender only when the sender is that author.
    let issue_author = event
        .issue
        .user
        .as_ref()
        .and_then(|u| u.login.clone())
        .unwrap_or_default();
    let association = event.issue.author_association.clone();
    let sender = match &event.sender {
        Some(sender) => {
            let same = sender
                .login
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&issue_author));
            sender.author(association.as_deref().filter(|_| same))
        }
        None => Author {
            login: None,
            association: None,
            bot: false,
        },
    };
    IssueEvent {
        repo: facts(&event.repository),
        action,
        label: event.label.map(|l| text(Some(l.name))),
        issue: issue_facts(event.issue, None),
        sender,
    }
}

fn read_comment_event(event: IssueCommentJson) -> CommentEvent {
    let commenter = match &event.comment.user {
        Some(user) => user.author(event.comment.author_association.as_deref()),
        None => Author {
            login: None,
            association: None,
            bot: false,
        },
    };
    let sender = event.sender.as_ref().map(|s| s.author(None)).filter(|s| {
        match (&s.login, &commenter.login) {
            (Some(sender), Some(commenter)) => !sender.eq_ignore_ascii_case(commenter),
            _ => true,
        }
    });
    CommentEvent {
        repo: facts(&event.repository),
        action: event.action,
        issue: issue_facts(event.issue, event.is_pull),
        comment_id: event.comment.id,
        body: text(event.comment.body),
        commenter,
        sender,
    }
}

fn real_sha(sha: Option<String>) -> Option<String> {
    sha.filter(|s| !s.is_empty() && s != ZERO_SHA)
}

/// Checks the commits and refs an event names before anything reaches git.
fn check_names(event: &str, shas: &[&str], refs: &[&str]) -> Result<(), PayloadError> {
    let invalid = |problem: String| PayloadError::Invalid {
        event: event.to_string(),
        problem,
    };
    for sha in shas {
        if !super::git_names::is_full_sha(sha) {
            return Err(invalid(format!("'{sha}' is not a full commit sha")));
        }
    }
    for name in refs {
        super::git_names::check_ref(name).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

fn facts(repo: &RepositoryJson) -> RepoFacts {
    RepoFacts {
        full_name: repo.full_name.clone(),
        default_branch: repo.default_branch.clone().filter(|b| !b.is_empty()),
    }
}

fn read_push(forge: Forge, push: PushJson) -> Push {
    let after = if push.deleted {
        None
    } else {
        real_sha(push.after)
    };
    let changed_files = push.commits.filter(|c| !c.is_empty()).map(|commits| {
        let mut files: Vec<String> = commits
            .into_iter()
            .flat_map(|c| c.added.into_iter().chain(c.removed).chain(c.modified))
            .collect();
        files.sort();
        files.dedup();
        files
    });
    let (actor, co_actors) = push_actor(forge, push.pusher.as_ref(), push.sender.as_ref());
    Push {
        actor,
        co_actors,
        repo: facts(&push.repository),
        git_ref: push.git_ref,
        before: real_sha(push.before),
        after,
        changed_files,
    }
}

fn read_pull_request(
    forge: Forge,
    event: PullRequestEventJson,
) -> Result<PullRequestEvent, PayloadError> {
    let pr = event.pull_request;
    let number = event
        .number
        .or(pr.number)
        .ok_or_else(|| PayloadError::Invalid {
            event: "pull_request".into(),
            problem: "missing field `number`".into(),
        })?;
    let action = match (forge, event.action.as_str()) {
        (Forge::Gitea, "synchronized") => "synchronize".to_string(),
        // A label added to or taken from a pull request: Gitea's `pull_request` event says
        // it as on issues.
        (Forge::Gitea, "label_updated") => "labeled".to_string(),
        (Forge::Gitea, "label_cleared") => "unlabeled".to_string(),
        (_, action) => action.to_string(),
    };
    let base_name = &event.repository.full_name;
    let head_name = pr.head.repo.as_ref().and_then(|r| r.full_name.clone());
    let head_id = pr
        .head
        .repo
        .as_ref()
        .and_then(|r| r.id.clone())
        .or_else(|| pr.head.repo_id.clone());
    let base_id = pr
        .base
        .repo
        .as_ref()
        .and_then(|r| r.id.clone())
        .or_else(|| pr.base.repo_id.clone())
        .or_else(|| event.repository.id.clone());
    let same_repo = match (&head_name, &head_id, &base_id) {
        (Some(head), _, _) => head.eq_ignore_ascii_case(base_name),
        (None, Some(head), Some(base)) => head == base,
        _ => false,
    };
    // A head that is not a branch is nobody's branch of the repository: Gitea's AGit flow
    // (`refs/pull/N/head`, opened by a push to `refs/for/<branch>` that anyone who may read
    // the repository can make) names the base repository as its head's. A fork's, then.
    let branch_head = !pr.head.git_ref.starts_with("refs/");
    let head_clone_url = pr.head.repo.as_ref().and_then(|r| r.clone_url.clone());
    let sender = event.sender.as_ref().and_then(AccountJson::login);
    let (actor, co_actors) = match pr.user.as_ref().and_then(AccountJson::login) {
        Some(author) => (Some(author.clone()), others(&author, sender)),
        None => (sender, Vec::new()),
    };
    Ok(PullRequestEvent {
        actor,
        co_actors,
        repo: facts(&event.repository),
        action,
        number,
        base_ref: pr.base.git_ref,
        base_sha: pr.base.sha,
        head_ref: pr.head.git_ref,
        head_sha: pr.head.sha,
        head_clone_url: head_clone_url.filter(|_| !same_repo),
        from_fork: !same_repo || !branch_head,
        title: text(pr.title),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        // The real deliveries, shared with the engine's end-to-end tests.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../engine/tests/fixtures/webhooks");
        std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn github_issues_and_comments_say_who_caused_them() {
        let ForgeEvent::Issue(opened) = parse(
            Forge::GitHub,
            "issues",
            &fixture("github/issues-opened.json"),
        )
        .unwrap() else {
            panic!("not an issue")
        };
        assert_eq!(opened.action, "opened");
        assert_eq!(opened.issue.number, 1);
        assert_eq!(opened.issue.title, "Spelling error in the README file");
        assert_eq!(opened.issue.labels, ["bug"]);
        assert_eq!(opened.issue.author, "Codertocat");
        assert_eq!(
            opened.issue.url,
            "https://github.com/Codertocat/Hello-World/issues/1"
        );
        assert!(!opened.issue.is_pull_request);
        assert_eq!(opened.sender.login.as_deref(), Some("Codertocat"));
        assert_eq!(
            opened.sender.association.as_deref(),
            Some("OWNER"),
            "the sender is the author"
        );
        assert!(!opened.sender.bot);

        let ForgeEvent::Issue(labeled) = parse(
            Forge::GitHub,
            "issues",
            &fixture("github/issues-labeled.json"),
        )
        .unwrap() else {
            panic!("not an issue")
        };
        assert_eq!(
            (labeled.action.as_str(), labeled.label.as_deref()),
            ("labeled", Some("bug"))
        );

        let ForgeEvent::Comment(comment) = parse(
            Forge::GitHub,
            "issue_comment",
            &fixture("github/issue_comment-created.json"),
        )
        .unwrap() else {
            panic!("not a comment")
        };
        assert_eq!(comment.action, "created");
        assert_eq!(comment.comment_id, 492700400);
        assert_eq!(
            comment.body,
            "You are totally right! I'll get this fixed right away."
        );
        assert_eq!(comment.commenter.login.as_deref(), Some("Codertocat"));
        assert_eq!(comment.commenter.association.as_deref(), Some("OWNER"));
        assert_eq!(comment.sender, None, "the sender is the commenter");
        assert!(!comment.issue.is_pull_request);
    }

    #[test]
    fn a_label_added_by_somebody_else_does_not_borrow_the_authors_association() {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/issues-labeled.json")).unwrap();
        body["sender"]["login"] = "mallory".into();
        body["sender"]["type"] = "Bot".into();
        let ForgeEvent::Issue(labeled) =
            parse(Forge::GitHub, "issues", body.to_string().as_bytes()).unwrap()
        else {
            panic!("not an issue")
        };
        assert_eq!(labeled.sender.login.as_deref(), Some("mallory"));
        assert_eq!(labeled.sender.association, None);
        assert!(labeled.sender.bot);
    }

    #[test]
    fn gitea_issues_and_comments_on_issues_and_pull_requests() {
        let ForgeEvent::Issue(labeled) = parse(
            Forge::Gitea,
            "issues",
            &fixture("gitea/issues-label_updated.json"),
        )
        .unwrap() else {
            panic!("not an issue")
        };
        assert_eq!(labeled.action, "labeled", "label_updated");
        assert_eq!(labeled.label, None, "Gitea does not say which label");
        assert_eq!(labeled.issue.labels, ["bug"]);
        assert_eq!(labeled.sender.association, None, "Gitea has none");

        let ForgeEvent::Comment(on_issue) = parse(
            Forge::Gitea,
            "issue_comment",
            &fixture("gitea/issue_comment-created.json"),
        )
        .unwrap() else {
            panic!("not a comment")
        };
        assert!(!on_issue.issue.is_pull_request);
        assert_eq!(on_issue.comment_id, 2);

        let ForgeEvent::Comment(on_pr) = parse(
            Forge::Gitea,
            "issue_comment",
            &fixture("gitea/issue_comment-created-on-pull-request.json"),
        )
        .unwrap() else {
            panic!("not a comment")
        };
        assert!(on_pr.issue.is_pull_request);
        assert_eq!(on_pr.issue.number, 2);
        assert_eq!(on_pr.commenter.login.as_deref(), Some("example"));
        assert_eq!(
            on_pr.issue.author, "example2",
            "the PR's author is not the commenter"
        );
    }

    #[test]
    fn the_real_gitea_signatures_of_the_issue_fixtures_verify() {
        // The signatures Gitea sent with these bodies (go-playground/webhooks' test).
        let secret = "IsWishesWereHorsesWedAllBeEatingSteak!";
        for (file, sent) in [
            (
                "gitea/issues-opened.json",
                "98c44fd0ae42ca4208eac6f81e59b436837740abc8693bf828366b32d33b1cbc",
            ),
            (
                "gitea/issue_comment-created-on-pull-request.json",
                "8b38bf221adbaef2ce01cfa810c6d9cb977414fec306895973aea61e10e8d5a8",
            ),
        ] {
            super::super::signature::verify(Forge::Gitea, Some(sent), &fixture(file), secret)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn odd_text_is_kept_but_nul() {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/issue_comment-created.json")).unwrap();
        let odd = "/plue fix {{ steps.x.outputs.y }} $(rm -rf /) \u{202e}txt.exe {% raw %}\0end";
        body["comment"]["body"] = odd.into();
        let ForgeEvent::Comment(comment) =
            parse(Forge::GitHub, "issue_comment", body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a comment")
        };
        assert_eq!(comment.body, odd.replace('\0', "\u{fffd}"));
    }

    #[test]
    fn github_pushes() {
        let ForgeEvent::Push(push) = parse(
            Forge::GitHub,
            "push",
            &fixture("github/push-new-branch.json"),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(push.repo.full_name, "Codertocat/Hello-World");
        assert_eq!(push.repo.default_branch.as_deref(), Some("master"));
        assert_eq!(push.git_ref, "refs/heads/master");
        assert_eq!(push.before, None, "a new branch has no before");
        assert_eq!(
            push.after.as_deref(),
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        );
        assert_eq!(push.changed_files, Some(vec!["README.md".to_string()]));

        let ForgeEvent::Push(deleted) = parse(
            Forge::GitHub,
            "push",
            &fixture("github/push-delete-tag.json"),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(deleted.git_ref, "refs/tags/simple-tag");
        assert_eq!(deleted.after, None);
    }

    #[test]
    fn gitea_pushes_list_changed_files_of_every_commit() {
        let ForgeEvent::Push(push) = parse(
            Forge::Gitea,
            "push",
            &fixture("gitea/push-multi-commit.json"),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(
            push.changed_files,
            Some(vec!["aa".to_string(), "aaa".to_string()])
        );
        let ForgeEvent::Push(new_branch) =
            parse(Forge::Gitea, "push", &fixture("gitea/push-new-branch.json")).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(new_branch.before, None);
        assert_eq!(new_branch.changed_files, None, "no commits listed");
    }

    #[test]
    fn pull_requests_of_both_forges() {
        let ForgeEvent::PullRequest(pr) = parse(
            Forge::GitHub,
            "pull_request",
            &fixture("github/pull_request-opened.json"),
        )
        .unwrap() else {
            panic!("not a pull request")
        };
        assert_eq!(
            (
                pr.action.as_str(),
                pr.number,
                pr.base_ref.as_str(),
                pr.head_ref.as_str()
            ),
            ("opened", 2, "master", "changes")
        );
        assert!(!pr.from_fork);
        assert_eq!(pr.head_clone_url, None);
        assert_eq!(pr.title, "Update the README with new information.");

        let ForgeEvent::PullRequest(sync) = parse(
            Forge::Gitea,
            "pull_request",
            &fixture("gitea/pull_request-synchronized.json"),
        )
        .unwrap() else {
            panic!("not a pull request")
        };
        assert_eq!(sync.action, "synchronize");
        assert!(!sync.from_fork, "same repo_id on both sides");
        assert_eq!(sync.head_sha, "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25");

        // Gitea says a pull request's label changes as on issues (a real Gitea's
        // `pull_request` event after a label was added: `label_updated`), which matched no
        // `Trigger.on_pull_request(actions=["labeled"])`.
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("gitea/pull_request-synchronized.json")).unwrap();
        for (gitea, read) in [("label_updated", "labeled"), ("label_cleared", "unlabeled")] {
            body["action"] = gitea.into();
            let ForgeEvent::PullRequest(labeled) =
                parse(Forge::Gitea, "pull_request", body.to_string().as_bytes()).unwrap()
            else {
                panic!("not a pull request")
            };
            assert_eq!(labeled.action, read, "{gitea}");
            let ForgeEvent::PullRequest(github) =
                parse(Forge::GitHub, "pull_request", body.to_string().as_bytes()).unwrap()
            else {
                panic!("not a pull request")
            };
            assert_eq!(github.action, gitea, "GitHub's own names stay");
        }
    }

    #[test]
    fn forks_are_recognised_and_unknown_heads_count_as_forks() {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/pull_request-opened.json")).unwrap();
        body["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
        body["pull_request"]["head"]["repo"]["clone_url"] =
            "https://github.com/mallory/Hello-World.git".into();
        let ForgeEvent::PullRequest(pr) =
            parse(Forge::GitHub, "pull_request", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(pr.from_fork);
        assert_eq!(
            pr.head_clone_url.as_deref(),
            Some("https://github.com/mallory/Hello-World.git")
        );

        body["pull_request"]["head"]
            .as_object_mut()
            .unwrap()
            .remove("repo");
        let ForgeEvent::PullRequest(pr) =
            parse(Forge::GitHub, "pull_request", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(pr.from_fork, "a head of unknown origin is not trusted");
    }

    // Attack: on Gitea anyone who may read a repository opens a pull request by pushing
    // to `refs/for/<branch>` (AGit flow). Its payload names the base repository as the
    // head's and `refs/pull/N/head` as its ref, so it passed for a branch of the
    // repository: repository secrets, trusted runners, the repository's concurrency
    // groups. A head that is not a branch is now from a fork.
    #[test]
    fn a_pull_request_pushed_to_refs_for_is_a_forks() {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("gitea/pull_request-opened.json")).unwrap();
        body["pull_request"]["head"]["ref"] = "refs/pull/2/head".into();
        body["pull_request"]["head"]["label"] = "".into();
        let ForgeEvent::PullRequest(pr) =
            parse(Forge::Gitea, "pull_request", body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a pull request")
        };
        assert!(pr.from_fork, "an AGit pull request is not a branch's");
        assert_eq!(pr.head_clone_url, None, "its commit is in the repository");
    }

    fn actor_of(forge: Forge, event: &str, path: &str) -> Option<String> {
        match parse(forge, event, &fixture(path)).unwrap() {
            ForgeEvent::Push(push) => push.actor,
            ForgeEvent::PullRequest(pr) => pr.actor,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn actors_are_the_pusher_and_the_pull_requests_author() {
        for (forge, event, path, actor) in [
            (
                Forge::GitHub,
                "push",
                "github/push-new-branch.json",
                "Codertocat",
            ),
            (
                Forge::GitHub,
                "push",
                "github/push-delete-tag.json",
                "Codertocat",
            ),
            (
                Forge::GitHub,
                "pull_request",
                "github/pull_request-opened.json",
                "Codertocat",
            ),
            (Forge::Gitea, "push", "gitea/push-new-branch.json", "6543"),
            (
                Forge::Gitea,
                "push",
                "gitea/push-multi-commit.json",
                "test-user",
            ),
            (
                Forge::Gitea,
                "pull_request",
                "gitea/pull_request-opened.json",
                "jcitizen",
            ),
            (
                Forge::Gitea,
                "pull_request",
                "gitea/pull_request-synchronized.json",
                "test",
            ),
        ] {
            assert_eq!(
                actor_of(forge, event, path).as_deref(),
                Some(actor),
                "{path}"
            );
        }
    }

    // A GitHub App's push names its bot: dropped as an odd name, the engine could not
    // tell its own push (as the App) from anyone's, and ran it with secrets.
    #[test]
    fn an_apps_bot_is_a_login_and_brackets_elsewhere_are_not() {
        for (login, valid) in [
            ("plue-app[bot]", true),
            ("dependabot[bot]", true),
            ("[bot]", false),
            ("a[bot]b", false),
            ("a[bot][bot]", false),
            ("a b[bot]", false),
        ] {
            assert_eq!(valid_login(login), valid, "{login}");
        }
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/push-new-branch.json")).unwrap();
        body["pusher"]["name"] = "plue-app[bot]".into();
        body["sender"]["login"] = "plue-app[bot]".into();
        let ForgeEvent::Push(push) =
            parse(Forge::GitHub, "push", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(push.actor.as_deref(), Some("plue-app[bot]"));
    }

    #[test]
    fn an_actor_is_the_authors_login_not_the_sender_and_never_an_odd_name() {
        // A synchronize by somebody else still names the pull request's author.
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/pull_request-opened.json")).unwrap();
        body["sender"]["login"] = "mallory".into();
        let ForgeEvent::PullRequest(pr) =
            parse(Forge::GitHub, "pull_request", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(pr.actor.as_deref(), Some("Codertocat"));
        // Attack: mallory pushes onto Codertocat's pull request (a `synchronize` whose
        // sender is mallory); she started that run as much as its author did.
        assert_eq!(pr.co_actors, ["mallory"]);
        // A Gitea push whose pusher and sender disagree names both.
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("gitea/push-multi-commit.json")).unwrap();
        body["sender"]["login"] = "Mallory".into();
        let ForgeEvent::Push(push) =
            parse(Forge::Gitea, "push", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(push.actor.as_deref(), Some("test-user"));
        assert_eq!(push.co_actors, ["Mallory"]);
        // A login no forge would give is dropped, not recorded.
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("github/push-new-branch.json")).unwrap();
        body["sender"]["login"] = "admin\u{202e}x".into();
        body["pusher"]["name"] = "a b".into();
        let ForgeEvent::Push(push) =
            parse(Forge::GitHub, "push", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(push.actor, None);
    }

    #[test]
    fn pings_deletes_and_other_events() {
        assert_eq!(
            parse(Forge::GitHub, "ping", &fixture("github/ping-repo.json")).unwrap(),
            ForgeEvent::Ping {
                repo: Some("Octocoders/Hello-World".into())
            }
        );
        assert_eq!(
            parse(Forge::Gitea, "delete", &fixture("gitea/delete-tag.json")).unwrap(),
            ForgeEvent::Delete {
                repo: "gogits/hello-world".into(),
                ref_type: "tag".into()
            }
        );
        assert!(matches!(
            parse(
                Forge::GitHub,
                "star",
                br#"{"repository":{"full_name":"a/b"}}"#
            ),
            Ok(ForgeEvent::Ignored { .. })
        ));
        // An issue event without its issue is a bad payload, not an ignored one.
        assert!(matches!(
            parse(
                Forge::GitHub,
                "issues",
                br#"{"action":"opened","repository":{"full_name":"a/b"}}"#
            ),
            Err(PayloadError::Invalid { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for (event, body) in [
            ("push", &b"not json"[..]),
            ("push", b"[]"),
            ("push", b"{}"),
            ("push", br#"{"ref": 5, "repository": {"full_name": "a/b"}}"#),
            (
                "pull_request",
                br#"{"action":"opened","repository":{"full_name":"a/b"}}"#,
            ),
            ("ping", b"null"),
            (
                "push",
                br#"{"ref":"refs/heads/main","after":"--upload-pack=x","repository":{"full_name":"a/b"}}"#,
            ),
            (
                "push",
                br#"{"ref":"--exec=x","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":{"full_name":"a/b"}}"#,
            ),
        ] {
            assert!(
                parse(Forge::GitHub, event, body).is_err(),
                "{event} {body:?}"
            );
        }
    }
}
