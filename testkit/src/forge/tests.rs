//! The fake forge answers like the forges it fakes: shapes, status codes, tokens, faults,
//! and a git remote that takes real pushes only with the token.

use std::process::Command;

use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "forge-t0ken";

async fn call(
    forge: &FakeForge,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", forge.api_url());
    let mut request = client.request(method.parse().unwrap(), &url);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Pushes a commit adding `file` on top of main to `branch` over HTTP, with `token` (if
/// any) in `http.extraHeader`; returns whether git succeeded.
fn push_branch(forge: &FakeForge, repo: &str, branch: &str, token: Option<&str>) -> bool {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let git = |args: &[&str]| {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid");
        if let Some(token) = token {
            use base64::Engine;
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        command.output().unwrap()
    };
    assert!(git(&["clone", "-q", &forge.clone_url(repo), "."])
        .status
        .success());
    std::fs::write(dir.join(format!("{}.txt", branch.replace('/', "-"))), "x").unwrap();
    assert!(git(&["add", "-A"]).status.success());
    assert!(git(&["commit", "-q", "-m", "change"]).status.success());
    git(&["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")])
        .status
        .success()
}

/// A fake forge of `flavor` holding `acme/app` with a README.
fn forge_with_app(flavor: Flavor) -> FakeForge {
    let forge = FakeForge::start(flavor, TOKEN).unwrap();
    forge
        .create_repo_with("acme/app", &[("README.md", "hi\n")])
        .unwrap();
    forge
}

/// Opens the pull request `body` on `acme/app` with `auth`: the status and the answer.
async fn open_pull(forge: &FakeForge, auth: &str, body: &Value) -> (u16, Value) {
    call(
        forge,
        "POST",
        "/repos/acme/app/pulls",
        Some(body.clone()),
        Some(auth),
    )
    .await
}

#[tokio::test]
async fn github_pull_requests_are_created_once_per_head_and_found_by_head() {
    let forge = forge_with_app(Flavor::GitHub);
    let repo = "acme/app";
    assert!(push_branch(&forge, repo, "plue/run-1-fix", Some(TOKEN)));
    let auth = format!("Bearer {TOKEN}");
    let body = json!({"title": "Fix", "body": "b", "head": "plue/run-1-fix", "base": "main"});
    let (status, pr) = open_pull(&forge, &auth, &body).await;
    assert_eq!(status, 201, "{pr}");
    assert_eq!(pr["number"], 1);
    assert_eq!(
        pr["html_url"],
        format!("{}/acme/app/pull/1", forge.url()).as_str()
    );
    assert_eq!(pr["head"]["ref"], "plue/run-1-fix");
    let (status, again) = open_pull(&forge, &auth, &body).await;
    assert_eq!(status, 422, "{again}");
    assert_eq!(again["message"], "Validation Failed");
    assert!(again["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    let (status, found) = call(
        &forge,
        "GET",
        "/repos/acme/app/pulls?head=acme:plue%2Frun-1-fix&base=main&state=open",
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found.as_array().unwrap().len(), 1);
    let (_, none) = call(
        &forge,
        "GET",
        "/repos/acme/app/pulls?head=acme:other&state=open",
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(none, json!([]));
    assert_eq!(forge.pulls(repo).len(), 1);
}

#[tokio::test]
async fn gitea_answers_409_for_a_second_pull_request_and_finds_it_by_base_and_head() {
    let forge = forge_with_app(Flavor::Gitea);
    assert!(push_branch(&forge, "acme/app", "plue/run-2-x", Some(TOKEN)));
    let auth = format!("token {TOKEN}");
    let body = json!({"title": "Fix", "body": "b", "head": "plue/run-2-x", "base": "main"});
    let (status, pr) = open_pull(&forge, &auth, &body).await;
    assert_eq!(status, 201, "{pr}");
    assert_eq!(
        pr["html_url"],
        format!("{}/acme/app/pulls/1", forge.url()).as_str()
    );
    let (status, again) = open_pull(&forge, &auth, &body).await;
    assert_eq!(status, 409, "{again}");
    assert!(again["message"]
        .as_str()
        .unwrap()
        .starts_with("pull request already exists for these targets"));
    assert!(again["url"].is_string());
    let (status, found) = call(
        &forge,
        "GET",
        "/repos/acme/app/pulls/main/plue/run-2-x",
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["number"], 1);
    let (status, _) = call(
        &forge,
        "GET",
        "/repos/acme/app/pulls/main/nothing",
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_the_token_nothing_is_read_written_or_pushed() {
    for flavor in [Flavor::GitHub, Flavor::Gitea] {
        let forge = FakeForge::start(flavor, TOKEN).unwrap();
        forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
        let issue = forge.create_issue("acme/app", "t", "b", "alice");
        let path = format!("/repos/acme/app/issues/{issue}/comments");
        for auth in [None, Some("Bearer wrong"), Some("Basic eDp5")] {
            let (status, body) =
                call(&forge, "POST", &path, Some(json!({"body": "hi"})), auth).await;
            assert_eq!(status, 401, "{flavor:?} {auth:?}: {body}");
            assert!(body["message"].is_string());
        }
        assert!(forge.comments("acme/app").is_empty());
        assert!(!push_branch(&forge, "acme/app", "evil", None));
        assert!(!push_branch(&forge, "acme/app", "evil", Some("wrong")));
        assert_eq!(forge.branch_sha("acme/app", "evil"), None);
        assert!(push_branch(&forge, "acme/app", "good", Some(TOKEN)));
        assert!(forge.branch_sha("acme/app", "good").is_some());
    }
}

// A forge's rule refuses the push even with the token: nothing is updated.
#[tokio::test]
async fn a_repository_made_to_refuse_pushes_updates_nothing() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    forge
        .refuse_pushes("acme/app", "protected branch: changes need a review")
        .unwrap();
    assert!(!push_branch(
        &forge,
        "acme/app",
        "plue/run-1-fix",
        Some(TOKEN)
    ));
    assert_eq!(forge.branch_sha("acme/app", "plue/run-1-fix"), None);
}

#[tokio::test]
async fn comments_labels_issues_permissions_and_statuses_have_the_forges_shapes() {
    for flavor in [Flavor::GitHub, Flavor::Gitea] {
        let forge = FakeForge::start(flavor, TOKEN).unwrap();
        let sha = forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
        let bug = forge.create_label("acme/app", "bug");
        let issue = forge.create_issue("acme/app", "broken", "it is", "alice");
        let auth = format!("token {TOKEN}");
        let comments = format!("/repos/acme/app/issues/{issue}/comments");
        let (status, comment) = call(
            &forge,
            "POST",
            &comments,
            Some(json!({"body": "hello"})),
            Some(&auth),
        )
        .await;
        assert_eq!(status, 201, "{comment}");
        assert_eq!(comment["user"]["login"], "plue-bot");
        assert!(comment["id"].is_u64());
        let (status, listed) = call(&forge, "GET", &comments, None, Some(&auth)).await;
        assert_eq!((status, listed[0]["body"].clone()), (200, json!("hello")));
        let (status, _) = call(
            &forge,
            "POST",
            "/repos/acme/app/issues/99/comments",
            Some(json!({"body": "x"})),
            Some(&auth),
        )
        .await;
        assert_eq!(status, 404);

        let labels_path = format!("/repos/acme/app/issues/{issue}/labels");
        let body = match flavor {
            Flavor::GitHub => json!({"labels": ["bug", "needs-review"]}),
            Flavor::Gitea => json!({"labels": [bug, "needs-review"]}),
        };
        let (status, labels) = call(&forge, "POST", &labels_path, Some(body), Some(&auth)).await;
        assert_eq!(status, 200, "{labels}");
        let names: Vec<&str> = labels
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        match flavor {
            // GitHub creates a label it does not know; Gitea ignores a name it does not know.
            Flavor::GitHub => assert_eq!(names, ["bug", "needs-review"]),
            Flavor::Gitea => assert_eq!(names, ["bug"]),
        }

        let (status, created) = call(
            &forge,
            "POST",
            "/repos/acme/app/issues",
            Some(json!({"title": "follow-up", "body": "later"})),
            Some(&auth),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(created["number"], issue + 1);

        forge.set_permission("alice", "maintain");
        let (status, permission) = call(
            &forge,
            "GET",
            "/repos/acme/app/collaborators/alice/permission",
            None,
            Some(&auth),
        )
        .await;
        assert_eq!(status, 200);
        let expected = match flavor {
            Flavor::GitHub => "write",
            Flavor::Gitea => "maintain",
        };
        assert_eq!(permission["permission"], expected);
        assert_eq!(permission["role_name"], "maintain");
        let (status, _) = call(
            &forge,
            "GET",
            "/repos/acme/app/collaborators/mallory/permission",
            None,
            Some(&auth),
        )
        .await;
        assert_eq!(status, 404);

        let status_body = json!({"state": "success", "target_url": "http://p/runs/1",
            "description": "ok", "context": "plue/ci"});
        let (status, _) = call(
            &forge,
            "POST",
            &format!("/repos/acme/app/statuses/{sha}"),
            Some(status_body),
            Some(&auth),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(forge.statuses("acme/app")[0].context, "plue/ci");
    }
}

#[tokio::test]
async fn comments_are_listed_page_by_page() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let issue = forge.create_issue("acme/app", "t", "b", "alice");
    let auth = format!("Bearer {TOKEN}");
    let path = format!("/repos/acme/app/issues/{issue}/comments");
    for n in 0..35 {
        call(
            &forge,
            "POST",
            &path,
            Some(json!({"body": format!("c{n}")})),
            Some(&auth),
        )
        .await;
    }
    let (_, first) = call(&forge, "GET", &path, None, Some(&auth)).await;
    assert_eq!(first.as_array().unwrap().len(), 30);
    let (_, second) = call(&forge, "GET", &format!("{path}?page=2"), None, Some(&auth)).await;
    assert_eq!(second.as_array().unwrap().len(), 5);
    assert_eq!(second[4]["body"], "c34");
}

#[tokio::test]
async fn scripted_faults_fail_or_drop_the_answer_after_the_write() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let issue = forge.create_issue("acme/app", "t", "b", "alice");
    let auth = format!("Bearer {TOKEN}");
    let path = format!("/repos/acme/app/issues/{issue}/comments");
    forge.fault(Fault::new("POST", "/comments", FaultAction::Status(502)));
    let (status, _) = call(
        &forge,
        "POST",
        &path,
        Some(json!({"body": "1"})),
        Some(&auth),
    )
    .await;
    assert_eq!(status, 502);
    assert!(forge.comments("acme/app").is_empty());

    forge.fault(Fault::new("POST", "/comments", FaultAction::DropAfterWrite));
    let dropped = reqwest::Client::new()
        .post(format!("{}{path}", forge.api_url()))
        .header("authorization", &auth)
        .json(&json!({"body": "2"}))
        .send()
        .await;
    assert!(dropped.is_err(), "the answer should be lost: {dropped:?}");
    assert_eq!(forge.comments("acme/app").len(), 1, "the write happened");

    let (status, _) = call(
        &forge,
        "POST",
        &path,
        Some(json!({"body": "3"})),
        Some(&auth),
    )
    .await;
    assert_eq!(status, 201, "faults are used up");
    let recorded = forge.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[2].body["body"], "3");
    assert_eq!(recorded[2].header("authorization"), Some(auth.as_str()));
}

#[tokio::test]
async fn get_user_names_the_tokens_account_until_it_is_made_to_fail() {
    for flavor in [Flavor::GitHub, Flavor::Gitea] {
        let forge = forge_with_app(flavor);
        let (status, me) = call(
            &forge,
            "GET",
            "/user",
            None,
            Some(&format!("token {TOKEN}")),
        )
        .await;
        assert_eq!((status, &me["login"]), (200, &json!("plue-bot")), "{me}");
        let (status, _) = call(&forge, "GET", "/user", None, None).await;
        assert_eq!(status, 401);
        forge.whoami_fails(403);
        for _ in 0..3 {
            let (status, answer) = call(
                &forge,
                "GET",
                "/user",
                None,
                Some(&format!("Bearer {TOKEN}")),
            )
            .await;
            assert_eq!(status, 403, "{answer}");
        }
        // Nothing else fails with it.
        let (status, _) = call(
            &forge,
            "GET",
            "/repos/acme/app/collaborators/plue-bot/permission",
            None,
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
        assert_eq!(status, 200);
    }
}

// Real Gitea (1.26) tells a user's permission only to a site admin, an admin of the
// repository or that user: a token whose account merely writes gets 403 for anyone else.
// The fake answered every lookup, so a Gitea repository whose token's account was no admin
// passed every fake test and failed every summons against a real Gitea.
#[tokio::test]
async fn gitea_tells_permissions_only_to_the_repositorys_admins() {
    let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
    forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    forge.set_permission("alice", "write");
    let auth = format!("token {TOKEN}");
    let alice = "/repos/acme/app/collaborators/alice/permission";
    let own = "/repos/acme/app/collaborators/plue-bot/permission";
    // The default: Plue's account is an admin of the repository, as a deployment makes it.
    let (status, answer) = call(&forge, "GET", alice, None, Some(&auth)).await;
    assert_eq!(
        (status, &answer["permission"]),
        (200, &json!("write")),
        "{answer}"
    );
    forge.set_permission("plue-bot", "write");
    let (status, answer) = call(&forge, "GET", alice, None, Some(&auth)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("Only admins"),
        "{answer}"
    );
    let (status, answer) = call(&forge, "GET", own, None, Some(&auth)).await;
    assert_eq!(
        (status, &answer["permission"]),
        (200, &json!("write")),
        "{answer}"
    );
    // GitHub answers anyone with push access.
    let github = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    github.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    github.set_permission("alice", "write");
    let bearer = format!("Bearer {TOKEN}");
    let (status, answer) = call(&github, "GET", alice, None, Some(&bearer)).await;
    assert_eq!(status, 200, "{answer}");
}
