//! The fake forge's REST API (both flavors) and the request entry point: records the
//! request, applies scripted faults, checks the token, and routes to a handler that
//! changes the shared state and answers with the real forge's status and body shape.
//!
//! Why one file past ~600 lines: one fake REST API for both forge flavors; its routes share
//! state, faults and the token check.

use std::path::Path;
use std::process::Command;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::answer::Answer;
use super::query::{parse_query, percent_decode};
use super::{
    git_http, github_json, lock, Answered, Comment, FaultAction, Flavor, Issue, PullRequest,
    Recorded, Shared, SharedState, Status,
};

pub(crate) async fn handle(
    State(shared): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let (flavor, is_api) = {
        let shared = lock(&shared);
        let is_api = path.starts_with(&format!("{}/", shared.flavor.api_prefix()));
        (shared.flavor, is_api)
    };
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: if is_api {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        },
        answer: None,
    };
    let (fault, index) = {
        let mut shared = lock(&shared);
        shared.requests.push(recorded.clone());
        let index = shared.requests.len() - 1;
        (take_fault(&mut shared, method.as_str(), &path), index)
    };
    if let Some(FaultAction::Status(code)) = fault {
        let answer = error(flavor, &shared, code, "scripted fault of the fake forge");
        return respond(flavor, &shared, index, answer);
    }
    let response = if is_api {
        let gate = super::app::api_gate(&shared, method.as_str(), &path, &recorded);
        let answer = match gate.unwrap_or_else(|| authorized(&shared, &recorded)) {
            Err(answer) => answer,
            Ok(()) => {
                let rest = &path[flavor.api_prefix().len()..];
                route(
                    &shared,
                    method.as_str(),
                    rest,
                    &query,
                    &recorded.body,
                    &body,
                )
            }
        };
        respond(flavor, &shared, index, answer)
    } else {
        git_http::serve(&shared, &method, &path, &query, &headers, body).await
    };
    if fault == Some(FaultAction::DropAfterWrite) {
        // The write happened; the answer is lost. Unwinding ends the connection's task,
        // so the client sees the connection close without a response. `resume_unwind`
        // does not run the panic hook, so nothing is printed.
        std::panic::resume_unwind(Box::new("fake forge: connection dropped after the write"));
    }
    response
}

fn take_fault(shared: &mut Shared, method: &str, path: &str) -> Option<FaultAction> {
    let index = shared
        .faults
        .iter()
        .position(|f| f.method == method && path.ends_with(&f.path_suffix) && f.times > 0)?;
    let fault = &mut shared.faults[index];
    fault.times -= 1;
    let action = fault.action.clone();
    if fault.times == 0 {
        shared.faults.remove(index);
    }
    Some(action)
}

/// `Authorization: Bearer <token>` or `token <token>` (both forges take both).
fn authorized(shared: &SharedState, request: &Recorded) -> Result<(), Answer> {
    let shared_ref = lock(shared);
    let flavor = shared_ref.flavor;
    let token = shared_ref.token.clone();
    drop(shared_ref);
    let given = request.header("authorization").and_then(|value| {
        let (scheme, credential) = value.split_once(' ')?;
        ["bearer", "token"]
            .contains(&scheme.to_ascii_lowercase().as_str())
            .then(|| credential.trim().to_string())
    });
    match given {
        Some(given) if given == token => Ok(()),
        Some(_) => Err(error(flavor, shared, 401, "Bad credentials")),
        None => Err(error(flavor, shared, 401, "Requires authentication")),
    }
}

/// An error in the flavor's shape: GitHub's `basic-error` (`message`, `documentation_url`,
/// `status`) or Gitea's `APIError` (`message`, `url`).
fn error(flavor: Flavor, shared: &SharedState, status: u16, message: &str) -> Answer {
    let body = match flavor {
        Flavor::GitHub => json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        }),
        Flavor::Gitea => json!({
            "message": message,
            "url": format!("{}/api/swagger", lock(shared).url),
        }),
    };
    Answer::json(status, body)
}

/// Sends `answer`, recording it with request `index` first.
fn respond(flavor: Flavor, shared: &SharedState, index: usize, answer: Answer) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8");
    if flavor == Flavor::GitHub {
        response = response.header("x-github-media-type", "github.v3; format=json");
    }
    if let Some(recorded) = lock(shared).requests.get_mut(index) {
        recorded.answer = Some(Answered {
            status: answer.status,
            body: answer.body.clone(),
            headers: answer
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect(),
        });
    }
    for (name, value) in answer.headers {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.body.to_string()))
        .expect("a response")
}

/// Routes `rest` (the path after the API prefix).
fn route(
    shared: &SharedState,
    method: &str,
    rest: &str,
    query: &str,
    body: &Value,
    raw: &Bytes,
) -> Answer {
    let flavor = lock(shared).flavor;
    let segments: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_found = || error(flavor, shared, 404, "Not Found");
    if method == "GET" && segments.as_slice() == ["user"] {
        // The account the token acts as (both forges: `login`); a scripted fault stands
        // for a token that may not say (a GitHub App's: 403).
        let (bot, url) = {
            let shared = lock(shared);
            (shared.bot.clone(), shared.url.clone())
        };
        return Answer::json(
            200,
            match flavor {
                Flavor::GitHub => github_json::authenticated(&url, &bot),
                Flavor::Gitea => json!({"id": 1, "login": bot, "type": "User"}),
            },
        );
    }
    let ["repos", owner, name, tail @ ..] = segments.as_slice() else {
        return not_found();
    };
    let repo = format!("{owner}/{name}");
    if !lock(shared).repos.contains_key(&repo) {
        return not_found();
    }
    if !body.is_object() && !body.is_array() && method == "POST" && !raw.is_empty() {
        return error(flavor, shared, 400, "Problems parsing JSON");
    }
    if let Some(answer) = super::checks::route(shared, method, &repo, tail, query, body) {
        return answer;
    }
    let number = |text: &str| text.parse::<u64>().ok();
    match (method, tail) {
        ("GET", []) => repository(shared, &repo),
        ("POST", ["pulls"]) => create_pull(shared, &repo, body),
        ("GET", ["pulls"]) => list_pulls(shared, &repo, query),
        ("GET", ["pulls", n]) if number(n).is_some() => {
            get_pull(shared, &repo, |p| Some(p.number) == number(n))
        }
        ("GET", ["pulls", base, head @ ..]) if flavor == Flavor::Gitea && !head.is_empty() => {
            let head = head.join("/");
            let head = head
                .split_once(':')
                .map_or(head.as_str(), |(_, branch)| branch)
                .to_string();
            get_pull(shared, &repo, |p| p.base == *base && p.head == head)
        }
        ("POST", ["issues"]) => create_issue(shared, &repo, body),
        ("GET", ["issues"]) => list_issues(shared, &repo, query),
        ("GET", ["issues", n]) if number(n).is_some() => get_issue(shared, &repo, number(n)),
        ("POST", ["issues", n, "comments"]) => create_comment(shared, &repo, number(n), body),
        ("GET", ["issues", n, "comments"]) => list_comments(shared, &repo, number(n), query),
        ("POST", ["issues", n, "labels"]) => add_labels(shared, &repo, number(n), body),
        ("GET", ["issues", n, "labels"]) => match number(n).filter(|n| exists(shared, &repo, *n)) {
            Some(n) => Answer::json(200, labels_json(shared, &repo, n)),
            None => not_found(),
        },
        ("GET", ["collaborators", user, "permission"]) => permission(shared, user),
        ("POST", ["statuses", sha]) => create_status(shared, &repo, sha, body),
        _ => not_found(),
    }
}

/// `GET /repos/{owner}/{name}`: the repository its name names now (GitHub's `repository`
/// shape; Gitea's fields Plue reads).
fn repository(shared: &SharedState, repo: &str) -> Answer {
    let guard = lock(shared);
    let id = guard.repo_id(repo);
    let mut shown = match guard.flavor {
        Flavor::GitHub => github_json::repository(&guard.url, repo),
        Flavor::Gitea => {
            let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
            json!({
                "full_name": repo,
                "name": name,
                "owner": {"id": 1, "login": owner},
                "private": false,
                "default_branch": "main",
                "clone_url": format!("{}/{repo}.git", guard.url),
                "html_url": format!("{}/{repo}", guard.url),
            })
        }
    };
    shown["id"] = json!(id);
    Answer::json(200, shown)
}

fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// GitHub's 422 `validation-error` or Gitea's 422 `APIValidationError`.
fn invalid(
    flavor: Flavor,
    shared: &SharedState,
    resource: &str,
    field: &str,
    message: &str,
) -> Answer {
    match flavor {
        Flavor::GitHub => Answer::json(
            422,
            json!({
                "message": "Validation Failed",
                "errors": [{"resource": resource, "field": field, "code": "custom", "message": message}],
                "documentation_url": "https://docs.github.com/rest",
                "status": "422",
            }),
        ),
        Flavor::Gitea => error(flavor, shared, 422, message),
    }
}

fn create_pull(shared: &SharedState, repo: &str, body: &Value) -> Answer {
    let flavor = lock(shared).flavor;
    let (Some(head), Some(base)) = (str_field(body, "head"), str_field(body, "base")) else {
        return invalid(
            flavor,
            shared,
            "PullRequest",
            "head",
            "head and base are required",
        );
    };
    let Some(title) = str_field(body, "title").filter(|t| !t.trim().is_empty()) else {
        return invalid(flavor, shared, "PullRequest", "title", "title is required");
    };
    let owner = repo.split('/').next().unwrap_or_default();
    // `owner:branch` (GitHub's cross-repository form; Gitea takes it too).
    let head = match head.split_once(':') {
        Some((head_owner, branch)) if head_owner == owner => branch,
        Some(_) => {
            return invalid(
                flavor,
                shared,
                "PullRequest",
                "head",
                "forks are not hosted here",
            )
        }
        None => head,
    };
    if head == base {
        return match flavor {
            Flavor::GitHub => invalid(
                flavor,
                shared,
                "PullRequest",
                "base",
                &format!("No commits between {base} and {head}"),
            ),
            Flavor::Gitea => error(
                flavor,
                shared,
                422,
                "Invalid PullRequest: There are no changes between the head and the base",
            ),
        };
    }
    let dir = lock(shared).root.join(format!("{repo}.git"));
    let (Some(head_sha), Some(base_sha)) = (branch_sha(&dir, head), branch_sha(&dir, base)) else {
        return match flavor {
            Flavor::GitHub => invalid(flavor, shared, "PullRequest", "head", "invalid"),
            Flavor::Gitea => error(flavor, shared, 404, "The target couldn't be found."),
        };
    };
    if head_sha == base_sha {
        return invalid(
            flavor,
            shared,
            "PullRequest",
            "head",
            &format!("No commits between {base} and {head}"),
        );
    }
    let mut guard = lock(shared);
    let bot = guard.bot.clone();
    let state = guard.repos.get_mut(repo).expect("checked by the router");
    if let Some(existing) = state
        .pulls
        .iter()
        .find(|p| p.state == "open" && p.head == head && p.base == base)
    {
        let number = existing.number;
        drop(guard);
        return match flavor {
            Flavor::GitHub => invalid(
                flavor,
                shared,
                "PullRequest",
                "head",
                &format!("A pull request already exists for {owner}:{head}."),
            ),
            Flavor::Gitea => error(
                flavor,
                shared,
                409,
                &format!(
                    "pull request already exists for these targets [id: {number}, issue_id: \
                     {number}, head_repo_id: 1, base_repo_id: 1, head_branch: {head}, \
                     base_branch: {base}]"
                ),
            ),
        };
    }
    let number = state.next_number.max(1);
    state.next_number = number + 1;
    let pull = PullRequest {
        number,
        title: title.into(),
        body: str_field(body, "body").unwrap_or_default().into(),
        head: head.into(),
        base: base.into(),
        head_sha,
        base_sha,
        state: "open".into(),
        author: bot,
    };
    state.pulls.push(pull.clone());
    let url = guard.url.clone();
    drop(guard);
    let json = pull_json(flavor, &url, repo, &pull);
    let mut answer = Answer::json(201, json);
    if flavor == Flavor::GitHub {
        answer.headers.push((
            "location".into(),
            format!("{url}/api/v3/repos/{repo}/pulls/{number}"),
        ));
    }
    answer
}

fn list_pulls(shared: &SharedState, repo: &str, query: &str) -> Answer {
    let params = parse_query(query);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let guard = lock(shared);
    let flavor = guard.flavor;
    let owner = repo.split('/').next().unwrap_or_default();
    let state = get("state").unwrap_or("open");
    // GitHub filters by `head=owner:branch` and `base`; Gitea by `base_branch` (no head).
    let head = match flavor {
        Flavor::GitHub => get("head").map(|h| match h.split_once(':') {
            Some((o, branch)) if o == owner => branch.to_string(),
            // Another owner's branch: matches nothing here.
            Some(_) => "\0".to_string(),
            None => h.to_string(),
        }),
        Flavor::Gitea => None,
    };
    let base = match flavor {
        Flavor::GitHub => get("base"),
        Flavor::Gitea => get("base_branch"),
    };
    let url = guard.url.clone();
    let pulls: Vec<Value> = guard.repos[repo]
        .pulls
        .iter()
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
        .filter(|p| base.is_none_or(|b| p.base == b))
        .map(|p| pull_json(flavor, &url, repo, p))
        .collect();
    drop(guard);
    paginate(flavor, &url, pulls, &params)
}

fn get_pull(shared: &SharedState, repo: &str, matches: impl Fn(&PullRequest) -> bool) -> Answer {
    let guard = lock(shared);
    let flavor = guard.flavor;
    let url = guard.url.clone();
    let found = guard.repos[repo]
        .pulls
        .iter()
        .find(|p| matches(p))
        .map(|p| pull_json(flavor, &url, repo, p));
    drop(guard);
    match found {
        Some(json) => Answer::json(200, json),
        None => error(flavor, shared, 404, "Not Found"),
    }
}

fn pull_json(flavor: Flavor, url: &str, repo: &str, pull: &PullRequest) -> Value {
    if flavor == Flavor::GitHub {
        // Its labels are not shown here (GitHub lists them): no client reads them.
        return github_json::pull(url, repo, pull, json!([]));
    }
    let owner = repo.split('/').next().unwrap_or_default();
    let html = match flavor {
        Flavor::GitHub => format!("{url}/{repo}/pull/{}", pull.number),
        Flavor::Gitea => format!("{url}/{repo}/pulls/{}", pull.number),
    };
    let side = |branch: &str, sha: &str| {
        json!({
            "label": format!("{owner}:{branch}"),
            "ref": branch,
            "sha": sha,
            "repo": {"full_name": repo, "name": repo.split('/').nth(1)},
        })
    };
    json!({
        "id": 5000 + pull.number,
        "number": pull.number,
        "state": pull.state,
        "title": pull.title,
        "body": pull.body,
        "url": format!("{url}{}/repos/{repo}/pulls/{}", flavor.api_prefix(), pull.number),
        "html_url": html,
        "user": {"login": pull.author},
        "head": side(&pull.head, &pull.head_sha),
        "base": side(&pull.base, &pull.base_sha),
        "merged": false,
    })
}

fn create_issue(shared: &SharedState, repo: &str, body: &Value) -> Answer {
    let flavor = lock(shared).flavor;
    let Some(title) = str_field(body, "title").filter(|t| !t.trim().is_empty()) else {
        return invalid(flavor, shared, "Issue", "title", "title is required");
    };
    let mut guard = lock(shared);
    let bot = guard.bot.clone();
    let state = guard.repos.get_mut(repo).expect("checked by the router");
    let number = state.next_number.max(1);
    state.next_number = number + 1;
    let issue = Issue {
        number,
        title: title.into(),
        body: str_field(body, "body").unwrap_or_default().into(),
        author: bot,
    };
    state.issues.push(issue.clone());
    drop(guard);
    Answer::json(201, issue_json(shared, repo, &issue))
}

/// The repository's issues (open ones unless `state` says otherwise). Pull requests,
/// which GitHub lists here too, are left out, as Gitea does with `type=issues`.
fn list_issues(shared: &SharedState, repo: &str, query: &str) -> Answer {
    let params = parse_query(query);
    let state = params
        .iter()
        .find(|(k, _)| k == "state")
        .map_or("open", |(_, v)| v.as_str());
    let guard = lock(shared);
    let flavor = guard.flavor;
    let url = guard.url.clone();
    let issues: Vec<Issue> = guard.repos[repo]
        .issues
        .iter()
        .filter(|_| state == "open" || state == "all")
        .cloned()
        .collect();
    drop(guard);
    let items = issues
        .iter()
        .map(|issue| issue_json(shared, repo, issue))
        .collect();
    paginate(flavor, &url, items, &params)
}

fn get_issue(shared: &SharedState, repo: &str, number: Option<u64>) -> Answer {
    let guard = lock(shared);
    let issue = guard.repos[repo]
        .issues
        .iter()
        .find(|i| Some(i.number) == number)
        .cloned();
    let flavor = guard.flavor;
    drop(guard);
    match issue {
        Some(issue) => Answer::json(200, issue_json(shared, repo, &issue)),
        None => error(flavor, shared, 404, "Not Found"),
    }
}

fn issue_json(shared: &SharedState, repo: &str, issue: &Issue) -> Value {
    let guard = lock(shared);
    let url = guard.url.clone();
    let flavor = guard.flavor;
    let prefix = flavor.api_prefix();
    drop(guard);
    if flavor == Flavor::GitHub {
        let labels = labels_json(shared, repo, issue.number);
        return github_json::issue(&url, repo, issue, labels);
    }
    json!({
        "id": 7000 + issue.number,
        "number": issue.number,
        "title": issue.title,
        "body": issue.body,
        "state": "open",
        "url": format!("{url}{prefix}/repos/{repo}/issues/{}", issue.number),
        "html_url": format!("{url}/{repo}/issues/{}", issue.number),
        "user": {"login": issue.author},
        "labels": labels_json(shared, repo, issue.number),
        "pull_request": null,
    })
}

/// Issues and pull requests share numbers; both take comments and labels.
fn exists(shared: &SharedState, repo: &str, number: u64) -> bool {
    let guard = lock(shared);
    let state = &guard.repos[repo];
    state.issues.iter().any(|i| i.number == number)
        || state.pulls.iter().any(|p| p.number == number)
}

fn create_comment(shared: &SharedState, repo: &str, number: Option<u64>, body: &Value) -> Answer {
    let flavor = lock(shared).flavor;
    let Some(number) = number.filter(|n| exists(shared, repo, *n)) else {
        return error(flavor, shared, 404, "Not Found");
    };
    let Some(text) = str_field(body, "body").filter(|b| !b.is_empty()) else {
        return invalid(flavor, shared, "IssueComment", "body", "body is required");
    };
    let mut guard = lock(shared);
    guard.next_id += 1;
    let comment = Comment {
        id: guard.next_id,
        issue: number,
        body: text.into(),
        author: guard.bot.clone(),
    };
    guard
        .repos
        .get_mut(repo)
        .expect("checked by the router")
        .comments
        .push(comment.clone());
    let url = guard.url.clone();
    drop(guard);
    let json = comment_json(flavor, &url, repo, &comment);
    Answer::json(201, json)
}

fn list_comments(shared: &SharedState, repo: &str, number: Option<u64>, query: &str) -> Answer {
    let flavor = lock(shared).flavor;
    let Some(number) = number.filter(|n| exists(shared, repo, *n)) else {
        return error(flavor, shared, 404, "Not Found");
    };
    let guard = lock(shared);
    let url = guard.url.clone();
    let comments: Vec<Value> = guard.repos[repo]
        .comments
        .iter()
        .filter(|c| c.issue == number)
        .map(|c| comment_json(flavor, &url, repo, c))
        .collect();
    drop(guard);
    paginate(flavor, &url, comments, &parse_query(query))
}

fn comment_json(flavor: Flavor, url: &str, repo: &str, comment: &Comment) -> Value {
    if flavor == Flavor::GitHub {
        return github_json::comment(url, repo, comment);
    }
    json!({
        "id": comment.id,
        "body": comment.body,
        "user": {"login": comment.author},
        "html_url": format!("{url}/{repo}/issues/{}#issuecomment-{}", comment.issue, comment.id),
        "issue_url": format!("{url}{}/repos/{repo}/issues/{}", flavor.api_prefix(), comment.issue),
        "created_at": "2026-11-25T00:00:00Z",
    })
}

/// One page of `items`: GitHub's `page`/`per_page` (30 by default, at most 100) with a
/// `Link: <…>; rel="next"` header, or Gitea's `page`/`limit` (30 by default, at most 50)
/// with `X-Total-Count`.
fn paginate(flavor: Flavor, _url: &str, items: Vec<Value>, params: &[(String, String)]) -> Answer {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let (size_name, max) = match flavor {
        Flavor::GitHub => ("per_page", 100),
        Flavor::Gitea => ("limit", 50),
    };
    let size = get(size_name).unwrap_or(30).clamp(1, max);
    let page = get("page").unwrap_or(1).max(1);
    let total = items.len();
    let start = (page - 1).saturating_mul(size).min(total);
    let end = (start + size).min(total);
    let mut answer = Answer::json(200, Value::Array(items[start..end].to_vec()));
    if end < total {
        answer.headers.push((
            "link".into(),
            format!("<?page={}&{size_name}={size}>; rel=\"next\"", page + 1),
        ));
    }
    answer
        .headers
        .push(("x-total-count".into(), total.to_string()));
    answer
}

fn add_labels(shared: &SharedState, repo: &str, number: Option<u64>, body: &Value) -> Answer {
    let flavor = lock(shared).flavor;
    let Some(number) = number.filter(|n| exists(shared, repo, *n)) else {
        return error(flavor, shared, 404, "Not Found");
    };
    // GitHub: {"labels": [name | {name}]} or a bare array; Gitea: {"labels": [id | name]}.
    let items = match (flavor, body) {
        (Flavor::GitHub, Value::Array(items)) => items.clone(),
        (_, Value::Object(map)) => match map.get("labels") {
            Some(Value::Array(items)) => items.clone(),
            _ => return invalid(flavor, shared, "Label", "labels", "labels is required"),
        },
        _ => return invalid(flavor, shared, "Label", "labels", "labels is required"),
    };
    let mut guard = lock(shared);
    let mut next_id = guard.next_id;
    let state = guard.repos.get_mut(repo).expect("checked by the router");
    let mut names = Vec::new();
    for item in items {
        let name = match (&item, flavor) {
            (Value::String(name), _) => Some(name.clone()),
            (Value::Object(o), Flavor::GitHub) => {
                o.get("name").and_then(Value::as_str).map(String::from)
            }
            (Value::Number(id), Flavor::Gitea) => {
                let found = state
                    .labels
                    .iter()
                    .find(|(i, _)| Some(*i) == id.as_u64())
                    .map(|(_, n)| n.clone());
                if found.is_none() {
                    drop(guard);
                    return error(flavor, shared, 404, "label not found");
                }
                found
            }
            _ => None,
        };
        let Some(name) = name else {
            drop(guard);
            return invalid(flavor, shared, "Label", "labels", "not a label");
        };
        let known = state.labels.iter().any(|(_, n)| *n == name);
        match (known, flavor) {
            (true, _) => names.push(name),
            // GitHub creates a label it does not know.
            (false, Flavor::GitHub) => {
                next_id += 1;
                state.labels.push((next_id, name.clone()));
                names.push(name);
            }
            // Gitea ignores names it does not know.
            (false, Flavor::Gitea) => {}
        }
    }
    let on_issue = state.issue_labels.entry(number).or_default();
    for name in names {
        if !on_issue.contains(&name) {
            on_issue.push(name);
        }
    }
    guard.next_id = next_id;
    drop(guard);
    Answer::json(200, labels_json(shared, repo, number))
}

fn labels_json(shared: &SharedState, repo: &str, number: u64) -> Value {
    let guard = lock(shared);
    let state = &guard.repos[repo];
    let names = state.issue_labels.get(&number).cloned().unwrap_or_default();
    Value::Array(
        names
            .iter()
            .map(|name| {
                let id = state
                    .labels
                    .iter()
                    .find(|(_, n)| n == name)
                    .map_or(0, |(id, _)| *id);
                match guard.flavor {
                    Flavor::GitHub => github_json::label(&guard.url, repo, id, name),
                    Flavor::Gitea => {
                        json!({"id": id, "name": name, "color": "ededed", "description": ""})
                    }
                }
            })
            .collect(),
    )
}

fn permission(shared: &SharedState, user: &str) -> Answer {
    let guard = lock(shared);
    let flavor = guard.flavor;
    // Gitea answers a site admin, an admin of the repository, or a user asking about
    // itself; anyone else gets 403 (`routers/api/v1/repo/collaborators.go`).
    let asker = guard.users.get(&guard.bot).map(String::as_str);
    if flavor == Flavor::Gitea
        && !user.eq_ignore_ascii_case(&guard.bot)
        && !matches!(asker, Some("admin" | "owner"))
    {
        drop(guard);
        return error(
            flavor,
            shared,
            403,
            "Only admins can query all permissions, repo admins can query all repo permissions, collaborators can query only their own",
        );
    }
    let found = guard.users.get(user).cloned();
    let url = guard.url.clone();
    drop(guard);
    match found {
        Some(role) => {
            // GitHub's legacy `permission` maps maintain to write and triage to read.
            let permission = match (flavor, role.as_str()) {
                (Flavor::GitHub, "maintain") => "write",
                (Flavor::GitHub, "triage") => "read",
                (_, other) => other,
            };
            let account = match flavor {
                Flavor::GitHub => github_json::collaborator(&url, user, &role),
                Flavor::Gitea => json!({"login": user}),
            };
            Answer::json(
                200,
                json!({"permission": permission, "role_name": role, "user": account}),
            )
        }
        None => error(flavor, shared, 404, "Not Found"),
    }
}

fn create_status(shared: &SharedState, repo: &str, sha: &str, body: &Value) -> Answer {
    let flavor = lock(shared).flavor;
    let state = str_field(body, "state").unwrap_or_default();
    let states: &[&str] = match flavor {
        Flavor::GitHub => &["pending", "success", "failure", "error"],
        Flavor::Gitea => &["pending", "success", "failure", "error", "warning"],
    };
    if !states.contains(&state) {
        return invalid(flavor, shared, "Status", "state", "state is not valid");
    }
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid(flavor, shared, "Status", "sha", "No commit found for SHA");
    }
    let status = Status {
        sha: sha.into(),
        state: state.into(),
        context: str_field(body, "context").unwrap_or("default").into(),
        description: str_field(body, "description").unwrap_or_default().into(),
        target_url: str_field(body, "target_url").unwrap_or_default().into(),
    };
    let mut guard = lock(shared);
    guard.next_id += 1;
    let id = guard.next_id;
    guard
        .repos
        .get_mut(repo)
        .expect("checked by the router")
        .statuses
        .push(status.clone());
    let (url, bot) = (guard.url.clone(), guard.bot.clone());
    drop(guard);
    if flavor == Flavor::GitHub {
        return Answer::json(201, github_json::status(&url, repo, id, &status, &bot));
    }
    Answer::json(
        201,
        json!({
            "id": id,
            "state": status.state,
            "context": status.context,
            "description": status.description,
            "target_url": status.target_url,
        }),
    )
}

/// The commit `branch` of the bare repository `dir` points at.
pub(crate) fn branch_sha(dir: &Path, branch: &str) -> Option<String> {
    if branch.starts_with('-') || branch.is_empty() {
        return None;
    }
    let output = Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}^{{commit}}"),
        ])
        .current_dir(dir)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
