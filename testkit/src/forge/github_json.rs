//! The fake GitHub's answer bodies in GitHub's full shapes: every property the schemas of
//! GitHub's REST API description require (`simple-user`, `repository`, `pull-request`,
//! `issue`, `issue-comment`, `label`, `status`, `public-user`, the collaborator permission's
//! `nullable-collaborator`), with the fake's own URLs and fixed times — so a client tested
//! here meets what api.github.com sends, not a convenient subset. The test
//! `forge/tests/github_api_description.rs` checks them against that description.
//!
//! Invariants: pure functions of the fake's state; `url` is the server's base
//! (`http://127.0.0.1:PORT`), API URLs are below `{url}/api/v3`, web URLs below `{url}`;
//! ids are deterministic (an account's id is derived from its login).

use serde_json::{json, Value};

use super::{Comment, Issue, PullRequest, Status};

/// When everything the fake makes was made (GitHub's `date-time`).
const WHEN: &str = "2026-11-25T00:00:00Z";

fn api(url: &str) -> String {
    format!("{url}/api/v3")
}

/// An account's id: the same for the same login.
fn account_id(login: &str) -> u64 {
    login.bytes().fold(7u64, |hash, byte| {
        (hash * 31 + u64::from(byte)) % 1_000_000_007
    })
}

/// `simple-user`.
pub(crate) fn user(url: &str, login: &str) -> Value {
    let user = format!("{}/users/{login}", api(url));
    json!({
        "login": login,
        "id": account_id(login),
        "node_id": format!("U_{login}"),
        "avatar_url": format!("{url}/avatars/{login}"),
        "gravatar_id": "",
        "url": user,
        "html_url": format!("{url}/{login}"),
        "followers_url": format!("{user}/followers"),
        "following_url": format!("{user}/following{{/other_user}}"),
        "gists_url": format!("{user}/gists{{/gist_id}}"),
        "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{user}/subscriptions"),
        "organizations_url": format!("{user}/orgs"),
        "repos_url": format!("{user}/repos"),
        "events_url": format!("{user}/events{{/privacy}}"),
        "received_events_url": format!("{user}/received_events"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
        "site_admin": false,
    })
}

/// `public-user`: what `GET /user` answers (of its `oneOf`, the one without the private
/// counts).
pub(crate) fn authenticated(url: &str, login: &str) -> Value {
    let mut account = user(url, login);
    let extra = json!({
        "name": null, "company": null, "blog": "", "location": null, "email": null,
        "hireable": null, "bio": null, "public_repos": 0, "public_gists": 0,
        "followers": 0, "following": 0, "created_at": WHEN, "updated_at": WHEN,
    });
    merge(&mut account, extra);
    account
}

/// `nullable-collaborator`: a collaborator permission's `user`.
pub(crate) fn collaborator(url: &str, login: &str, role: &str) -> Value {
    let mut account = user(url, login);
    merge(&mut account, json!({"role_name": role}));
    account
}

/// `repository`: `owner/name`'s.
/// The forge id of repository `repo` (`owner/name`) unless another repository took its
/// name: derived from the name, the same on every run.
pub(crate) fn repository_id(repo: &str) -> u64 {
    account_id(repo)
}

pub(crate) fn repository(url: &str, repo: &str) -> Value {
    let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
    let at = format!("{}/repos/{repo}", api(url));
    let mut repository = json!({
        "id": account_id(repo),
        "node_id": format!("R_{repo}"),
        "name": name,
        "full_name": repo,
        "owner": user(url, owner),
        "private": false,
        "html_url": format!("{url}/{repo}"),
        "description": null,
        "fork": false,
        "url": at,
        "archive_url": format!("{at}/{{archive_format}}{{/ref}}"),
        "assignees_url": format!("{at}/assignees{{/user}}"),
        "blobs_url": format!("{at}/git/blobs{{/sha}}"),
        "branches_url": format!("{at}/branches{{/branch}}"),
        "collaborators_url": format!("{at}/collaborators{{/collaborator}}"),
        "comments_url": format!("{at}/comments{{/number}}"),
        "commits_url": format!("{at}/commits{{/sha}}"),
        "compare_url": format!("{at}/compare/{{base}}...{{head}}"),
        "contents_url": format!("{at}/contents/{{+path}}"),
        "contributors_url": format!("{at}/contributors"),
        "deployments_url": format!("{at}/deployments"),
        "downloads_url": format!("{at}/downloads"),
        "events_url": format!("{at}/events"),
        "forks_url": format!("{at}/forks"),
        "git_commits_url": format!("{at}/git/commits{{/sha}}"),
        "git_refs_url": format!("{at}/git/refs{{/sha}}"),
        "git_tags_url": format!("{at}/git/tags{{/sha}}"),
        "git_url": format!("{url}/{repo}.git"),
        "hooks_url": format!("{at}/hooks"),
        "issue_comment_url": format!("{at}/issues/comments{{/number}}"),
        "issue_events_url": format!("{at}/issues/events{{/number}}"),
        "issues_url": format!("{at}/issues{{/number}}"),
        "keys_url": format!("{at}/keys{{/key_id}}"),
        "labels_url": format!("{at}/labels{{/name}}"),
        "languages_url": format!("{at}/languages"),
        "merges_url": format!("{at}/merges"),
        "milestones_url": format!("{at}/milestones{{/number}}"),
        "notifications_url": format!("{at}/notifications{{?since,all,participating}}"),
        "pulls_url": format!("{at}/pulls{{/number}}"),
        "releases_url": format!("{at}/releases{{/id}}"),
    });
    // Two halves: one `json!` of it all is past the macro's recursion limit.
    let counts = json!({
        "ssh_url": format!("git@127.0.0.1:{repo}.git"),
        "stargazers_url": format!("{at}/stargazers"),
        "statuses_url": format!("{at}/statuses/{{sha}}"),
        "subscribers_url": format!("{at}/subscribers"),
        "subscription_url": format!("{at}/subscription"),
        "tags_url": format!("{at}/tags"),
        "teams_url": format!("{at}/teams"),
        "trees_url": format!("{at}/git/trees{{/sha}}"),
        "clone_url": format!("{url}/{repo}.git"),
        "mirror_url": null,
        "svn_url": format!("{url}/{repo}"),
        "homepage": null,
        "language": null,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "size": 0,
        "default_branch": "main",
        "open_issues": 0,
        "open_issues_count": 0,
        "has_issues": true,
        "has_projects": false,
        "has_wiki": false,
        "has_pages": false,
        "has_downloads": false,
        "archived": false,
        "disabled": false,
        "license": null,
        "pushed_at": WHEN,
        "created_at": WHEN,
        "updated_at": WHEN,
    });
    merge(&mut repository, counts);
    repository
}

/// `integration`: a GitHub App (`slug`), owned by the organisation `plue-owner`.
pub(crate) fn integration(url: &str, id: u64, slug: &str) -> Value {
    json!({
        "id": id,
        "slug": slug,
        "node_id": format!("A_{id}"),
        "client_id": format!("Iv1.{id:016x}"),
        "owner": user(url, "plue-owner"),
        "name": slug,
        "description": null,
        "external_url": url,
        "html_url": format!("{url}/apps/{slug}"),
        "created_at": WHEN,
        "updated_at": WHEN,
        "permissions": {"checks": "write", "metadata": "read"},
        "events": [],
    })
}

/// `label`.
pub(crate) fn label(url: &str, repo: &str, id: u64, name: &str) -> Value {
    json!({
        "id": id,
        "node_id": format!("LA_{id}"),
        "url": format!("{}/repos/{repo}/labels/{}", api(url), encode(name)),
        "name": name,
        "description": null,
        "color": "ededed",
        "default": false,
    })
}

/// `pull-request`, with `labels` (each a [`label`]).
pub(crate) fn pull(url: &str, repo: &str, pull: &PullRequest, labels: Value) -> Value {
    let owner = repo.split('/').next().unwrap_or(repo);
    let number = pull.number;
    let at = format!("{}/repos/{repo}", api(url));
    let this = format!("{at}/pulls/{number}");
    let html = format!("{url}/{repo}/pull/{number}");
    let link = |href: String| json!({"href": href});
    let side = |branch: &str, sha: &str| {
        json!({
            "label": format!("{owner}:{branch}"),
            "ref": branch,
            "sha": sha,
            "user": user(url, owner),
            "repo": repository(url, repo),
        })
    };
    let statuses = format!("{at}/statuses/{}", pull.head_sha);
    let mut pull_request = json!({
        "url": this,
        "id": 5000 + number,
        "node_id": format!("PR_{repo}_{number}"),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{at}/issues/{number}"),
        "commits_url": format!("{this}/commits"),
        "review_comments_url": format!("{this}/comments"),
        "review_comment_url": format!("{at}/pulls/comments{{/number}}"),
        "comments_url": format!("{at}/issues/{number}/comments"),
        "statuses_url": statuses,
        "number": number,
        "state": pull.state,
        "locked": false,
        "title": pull.title,
        "user": user(url, &pull.author),
        "body": pull.body,
        "labels": labels,
        "milestone": null,
        "active_lock_reason": null,
        "created_at": WHEN,
        "updated_at": WHEN,
        "closed_at": null,
        "merged_at": null,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
    });
    // Two halves: one `json!` of it all is past the macro's recursion limit.
    let rest = json!({
        "head": side(&pull.head, &pull.head_sha),
        "base": side(&pull.base, &pull.base_sha),
        "_links": {
            "self": link(this.clone()),
            "html": link(html.clone()),
            "issue": link(format!("{at}/issues/{number}")),
            "comments": link(format!("{at}/issues/{number}/comments")),
            "review_comments": link(format!("{this}/comments")),
            "review_comment": link(format!("{at}/pulls/comments{{/number}}")),
            "commits": link(format!("{this}/commits")),
            "statuses": link(statuses.clone()),
        },
        "author_association": "NONE",
        "auto_merge": null,
        "draft": false,
        "merged": false,
        "mergeable": null,
        "rebaseable": null,
        "mergeable_state": "unknown",
        "merged_by": null,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    });
    merge(&mut pull_request, rest);
    pull_request
}

/// `issue`, with `labels` (each a [`label`]).
pub(crate) fn issue(url: &str, repo: &str, issue: &Issue, labels: Value) -> Value {
    let number = issue.number;
    let at = format!("{}/repos/{repo}", api(url));
    let this = format!("{at}/issues/{number}");
    json!({
        "id": 7000 + number,
        "node_id": format!("I_{repo}_{number}"),
        "url": this,
        "repository_url": at,
        "labels_url": format!("{this}/labels{{/name}}"),
        "comments_url": format!("{this}/comments"),
        "events_url": format!("{this}/events"),
        "html_url": format!("{url}/{repo}/issues/{number}"),
        "number": number,
        "state": "open",
        "title": issue.title,
        "body": issue.body,
        "user": user(url, &issue.author),
        "labels": labels,
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "locked": false,
        "comments": 0,
        "closed_at": null,
        "created_at": WHEN,
        "updated_at": WHEN,
        "author_association": "NONE",
    })
}

/// `issue-comment`.
pub(crate) fn comment(url: &str, repo: &str, comment: &Comment) -> Value {
    let at = format!("{}/repos/{repo}", api(url));
    json!({
        "id": comment.id,
        "node_id": format!("IC_{}", comment.id),
        "url": format!("{at}/issues/comments/{}", comment.id),
        "html_url": format!("{url}/{repo}/issues/{}#issuecomment-{}", comment.issue, comment.id),
        "issue_url": format!("{at}/issues/{}", comment.issue),
        "body": comment.body,
        "user": user(url, &comment.author),
        "created_at": WHEN,
        "updated_at": WHEN,
        "author_association": "NONE",
    })
}

/// `status`, posted by `creator`.
pub(crate) fn status(url: &str, repo: &str, id: u64, status: &Status, creator: &str) -> Value {
    json!({
        "url": format!("{}/repos/{repo}/statuses/{}", api(url), status.sha),
        "avatar_url": null,
        "id": id,
        "node_id": format!("SC_{id}"),
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "created_at": WHEN,
        "updated_at": WHEN,
        "creator": user(url, creator),
    })
}

/// Adds `extra`'s members to `object`.
fn merge(object: &mut Value, extra: Value) {
    if let (Value::Object(object), Value::Object(extra)) = (object, extra) {
        object.extend(extra);
    }
}

/// A label's name as a URL path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
