//! Plue's GitHub client against GitHub's own API description: every request the client
//! makes, and every answer the fake forge gives it, checked against the operation they
//! are in `@octokit/openapi`'s description of api.github.com (`testkit::api_description`
//! says what is checked, and pins the version); and every field the client reads from an
//! answer is in that answer's schema, required and never null where the client needs it.
//!
//! The client is driven for real — `status::post`, `writer::Writer` (pull requests and the
//! lookup after a 422, comments and their marker lookup, labels, issues), `lookup`'s pull
//! request refs and `GET /user`, `permission::Permissions` (the collaborator permission,
//! the engine's identity, a 403 to it); and as a GitHub App, `auth::ForgeAuth` (`GET /app`,
//! the repository's installation, its access tokens, a repository it is not installed on,
//! a refused token) and `checks` (a check run found or created, completed with more
//! annotations than one request takes) with the installation token — against
//! `testkit::forge::FakeForge`, whose recorded exchanges are then checked.
//!
//! The description is fetched with npm on first use (cached below the target directory);
//! without npm or the registry the test says so and passes, unless
//! `PLUE_REQUIRE_API_DESCRIPTIONS=1` (set by `.ci/run`), which makes that a failure.
//!
//! Gitea is not checked: no package registry reachable here ships Gitea's
//! `swagger.v1.json` (`testkit::api_description` lists what was looked at).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use evaluator::plan::Authors;
use plue_forge::auth::{ForgeAuth, GitHubApp, Token, Use};
use plue_forge::checks::{
    self, CheckAnnotation, CheckTarget, Completion, Conclusion, Level, NewCheckRun, Progress,
};
use plue_forge::lookup::{ApiTarget, Found};
use plue_forge::permission::{EngineIdentity, Permission, Permissions};
use plue_forge::status::{self, CommitStatus, StatusTarget};
use plue_forge::writer::{NewPull, Writer};
use plue_forge::Forge;
use plue_outbound::{Checker, Outbound, Secrets};
use plue_store::{RepoRow, Store};
use plue_types::status::CommitState;
use plue_vault::Vault;
use testkit::api_description::Description;
use testkit::forge::app::{AppConfig, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor, Recorded};

const TOKEN: &str = "ghs_described";
const REPO: &str = "acme/app";
const REQUIRE: &str = "PLUE_REQUIRE_API_DESCRIPTIONS";

/// What the client reads of each answer it parses, by operation and status: the fields of
/// the types it deserializes them into (`?`: the client does without). Errors are read
/// only as text.
const READS: &[(&str, u16, &[&str])] = &[
    // writer::Item
    (
        "pulls/create",
        201,
        &["number", "html_url?", "state?", "body?"],
    ),
    (
        "pulls/list",
        200,
        &["[].number", "[].html_url?", "[].state?", "[].body?"],
    ),
    // lookup::PullRefs
    (
        "pulls/get",
        200,
        &["base.ref", "base.sha", "head.ref", "head.sha"],
    ),
    // writer::CommentItem
    ("issues/create-comment", 201, &["id", "html_url?", "body?"]),
    (
        "issues/list-comments",
        200,
        &["[].id", "[].html_url?", "[].body?"],
    ),
    ("issues/add-labels", 200, &[]),
    // writer::Item
    (
        "issues/create",
        201,
        &["number", "html_url?", "state?", "body?"],
    ),
    (
        "issues/list-for-repo",
        200,
        &["[].number", "[].html_url?", "[].state?", "[].body?"],
    ),
    // lookup::Account
    ("users/get-authenticated", 200, &["login"]),
    // permission::PermissionAnswer
    (
        "repos/get-collaborator-permission-level",
        200,
        &["permission", "role_name?"],
    ),
    ("repos/create-commit-status", 201, &[]),
    // auth::installation::App
    ("apps/get-authenticated", 200, &["slug"]),
    // auth::installation::Installation
    ("apps/get-repo-installation", 200, &["id"]),
    // auth::installation::AccessToken
    (
        "apps/create-installation-access-token",
        201,
        &["token", "expires_at"],
    ),
    // checks::ListJson, CheckRunJson
    (
        "checks/list-for-ref",
        200,
        &[
            "check_runs",
            "check_runs.[].id",
            "check_runs.[].external_id?",
            "check_runs.[].app?",
            "check_runs.[].app.id",
        ],
    ),
    // checks::CheckRunJson
    (
        "checks/create",
        201,
        &["id", "external_id?", "output?", "app?", "app.id"],
    ),
    (
        "checks/get",
        200,
        &[
            "id",
            "external_id?",
            "output?",
            "output.annotations_count?",
            "app?",
            "app.id",
        ],
    ),
    ("checks/update", 200, &[]),
];

/// Findings the description makes that stay, each with why: the test fails when one of
/// them no longer occurs (remove it then).
const KNOWN: &[(&str, &str)] = &[(
    "apps/get-authenticated (GET /app): the client needs 'slug' of answer 200, which its schema does not require",
    "the `integration` schema leaves `slug` optional, though GET /app's example and every \
     App have one; an App's bot login is `<slug>[bot]` and nothing else names it. An answer \
     without it fails with 'the answer names no slug' (auth::installation), and the \
     engine's identity is then unknown, which trusts nothing",
)];

/// The description, parsed once for every test of this file; `None` (said on stderr)
/// when it cannot be had and [`REQUIRE`] is not `1`.
fn description() -> Option<&'static Description> {
    static DESCRIPTION: OnceLock<Option<Description>> = OnceLock::new();
    DESCRIPTION
        .get_or_init(|| {
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-descriptions");
            match Description::github(&cache) {
                Ok(description) => Some(description),
                Err(e) if std::env::var(REQUIRE).as_deref() != Ok("1") => {
                    eprintln!("skipping: GitHub's API description cannot be had ({e:#}); {REQUIRE}=1 makes this a failure");
                    None
                }
                Err(e) => panic!("{REQUIRE}=1 but GitHub's API description cannot be had: {e:#}"),
            }
        })
        .as_ref()
}

fn wall() -> Checker {
    Checker::new(&Secrets::new(), ["plue", "127.0.0.1"])
}

fn text(text: &str) -> Outbound {
    wall().check(text).expect("a text without secrets")
}

fn repo_row(api_url: &str) -> RepoRow {
    RepoRow {
        id: 1,
        name: REPO.into(),
        clone_url: format!("https://github.example/{REPO}.git"),
        forge: "github".into(),
        webhook_secret: "plain:secret".into(),
        api_url: Some(api_url.into()),
        api_token: Some(format!("plain:{TOKEN}")),
        default_branch: None,
        created_at: 0,
        public_read: None,
        forge_repo_id: None,
    }
}

/// Drives every call of the client against `fake` (GitHub flavor).
async fn drive(fake: &FakeForge) {
    let api = fake.api_url();
    let client = reqwest::Client::new();
    let head = fake
        .commit_files(REPO, "plue/run-1-fix", "main", &[("fix.txt", "fixed\n")])
        .unwrap();

    // Commit statuses.
    let target = StatusTarget {
        forge: Forge::GitHub,
        api_url: &api,
        token: Some(TOKEN),
        repo: REPO,
        sha: &head,
    };
    for state in [CommitState::Pending, CommitState::Success] {
        let posted = CommitStatus {
            state,
            target_url: "http://plue.example/runs/1".into(),
            description: text("the run is done"),
            context: text("plue/ci"),
        };
        status::post(&client, &target, &posted).await.unwrap();
    }

    // The writer: a pull request twice (the second a 422 and a lookup), comments with
    // their marker lookup, labels, issues with theirs.
    let writer = Writer {
        client: &client,
        forge: Forge::GitHub,
        api_url: &api,
        token: Some(TOKEN),
        repo: REPO,
    };
    let (title, body, branch) = (text("Fix it"), text("Fixed."), text("plue/run-1-fix"));
    let pull = NewPull {
        title: &title,
        body: &body,
        head: &branch,
        base: "main",
    };
    let opened = writer.open_pull_request(&pull).await.unwrap();
    assert!(opened.created);
    let again = writer.open_pull_request(&pull).await.unwrap();
    assert_eq!((again.number, again.created), (opened.number, false));
    let issue = fake.create_issue(REPO, "broken", "it is", "alice");
    let comment = writer
        .comment(issue, &text("On it."), "<!-- plue:run:1:started -->")
        .await
        .unwrap();
    let found = writer
        .comment(issue, &text("On it."), "<!-- plue:run:1:started -->")
        .await
        .unwrap();
    assert_eq!((found.number, found.created), (comment.number, false));
    writer
        .add_labels(opened.number, &[text("bug"), text("plue")])
        .await
        .unwrap();
    let follow_up = writer
        .open_issue(
            &text("Follow-up"),
            &text("Later."),
            "<!-- plue:proposal:9 -->",
        )
        .await
        .unwrap();
    let found = writer
        .open_issue(
            &text("Follow-up"),
            &text("Later."),
            "<!-- plue:proposal:9 -->",
        )
        .await
        .unwrap();
    assert_eq!((found.number, found.created), (follow_up.number, false));

    // Lookups: a pull request's refs, one that is not there.
    let lookups = ApiTarget {
        forge: Forge::GitHub,
        api_url: api.clone(),
        token: Some(Token::new(TOKEN.into())),
        repo: REPO.into(),
    };
    match lookups.pull_request(&client, opened.number).await.unwrap() {
        Found::Yes(refs) => assert_eq!(refs.head.sha, head),
        Found::NotFound => panic!("the pull request just opened is not found"),
    }
    assert!(matches!(
        lookups.pull_request(&client, 999).await.unwrap(),
        Found::NotFound
    ));

    // Who may summon, and who the engine is.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let auth = ForgeAuth::personal(Vault::unkeyed());
    let repo = repo_row(&api);
    fake.set_permission("carol", "maintain");
    let permissions = Permissions::default();
    for (login, expected) in [
        ("carol", Permission::Maintain),
        ("stranger", Permission::None),
    ] {
        let standing = permissions
            .of(&store, &auth, &repo, login, None, Authors::Maintain)
            .await
            .unwrap();
        assert_eq!(standing.permission, expected, "{login}");
    }
    assert_eq!(
        permissions.engine_identity(&auth, &repo).await,
        EngineIdentity::Known("plue-bot".into())
    );
    fake.whoami_fails(403);
    let unknown = Permissions::default().engine_identity(&auth, &repo).await;
    assert!(matches!(unknown, EngineIdentity::Unknown(_)), "{unknown:?}");
}

/// Drives the client as the GitHub App against `fake` (whose App mode is on): the App's
/// own endpoints, then check runs with an installation token.
async fn drive_as_app(fake: &FakeForge) {
    let api = fake.api_url();
    let client = reqwest::Client::new();
    let head = fake.branch_sha(REPO, "main").unwrap();
    let app = GitHubApp::new(4242, APP_KEY_PEM)
        .unwrap()
        .with_api_url(Some(api.clone()));
    let auth = ForgeAuth::new(Vault::unkeyed(), Some(app));
    let repo = RepoRow {
        api_token: None,
        ..repo_row(&api)
    };
    assert!(auth.is_app(&repo));
    assert_eq!(auth.app_login(&repo).await.unwrap(), "plue-test-app[bot]");
    let token = auth.token(&repo, Use::Report).await.unwrap().unwrap();

    let target = CheckTarget {
        api_url: &api,
        token: Some(token.expose()),
        repo: REPO,
        app_id: Some(4242),
    };
    let run = NewCheckRun {
        name: text("ci"),
        head_sha: head,
        progress: Progress::InProgress,
        details_url: "http://plue.example/runs/1".into(),
        external_id: "1".into(),
    };
    let id = checks::ensure(&client, &target, &run, None).await.unwrap();
    let found = checks::ensure(&client, &target, &run, None).await.unwrap();
    assert_eq!(found, id);
    let annotations = (1..=60)
        .map(|line| CheckAnnotation {
            path: text("src/main.rs"),
            start_line: line,
            end_line: line,
            level: Level::Warning,
            message: text("look here"),
            title: Some(text("a note")),
        })
        .collect();
    let done = Completion {
        conclusion: Conclusion::Failure,
        title: text("1 step failed"),
        summary: text("The step `test` failed."),
        annotations,
    };
    checks::complete(&client, &target, id, &done).await.unwrap();
    assert_eq!(fake.check_runs(REPO)[0].annotations.len(), 60);

    // Who may summon, asked with the App's lookup token.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    fake.set_permission("carol", "write");
    let standing = Permissions::default()
        .of(&store, &auth, &repo, "carol", None, Authors::Write)
        .await
        .unwrap();
    assert_eq!(standing.permission, Permission::Write);

    // A repository the App is not installed on, and a token GitHub refuses.
    fake.create_repo("acme/other").unwrap();
    fake.uninstall_app("acme/other");
    let other = RepoRow {
        id: 2,
        name: "acme/other".into(),
        ..repo.clone()
    };
    assert!(auth.token(&other, Use::Write).await.is_err());
    fake.refuse_installation_tokens(403);
    assert!(auth.token(&repo, Use::Write).await.is_err());
}

#[tokio::test]
async fn the_github_client_and_the_fake_forge_speak_as_githubs_description_says() {
    let Some(description) = description() else {
        return;
    };
    let fake = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    fake.create_repo_with(REPO, &[("README.md", "hi\n")])
        .unwrap();
    drive(&fake).await;
    let app = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    app.create_repo_with(REPO, &[("README.md", "hi\n")])
        .unwrap();
    app.enable_app(AppConfig::test(Duration::from_secs(3600)));
    drive_as_app(&app).await;

    let prefix = Flavor::GitHub.api_prefix();
    let exchanges: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .chain(app.requests())
        .filter(|r| r.path.starts_with(&format!("{prefix}/")))
        .collect();
    let mut findings = Vec::new();
    let mut answered = BTreeSet::new();
    for exchange in &exchanges {
        let checked = description.check(prefix, exchange);
        findings.extend(checked.findings);
        if let (Some(operation), Some(status)) = (checked.operation, checked.status) {
            answered.insert((operation, status));
        }
    }
    for (operation, status, reads) in READS {
        findings.extend(description.check_reads(operation, *status, reads));
        if !answered.contains(&(operation.to_string(), *status)) {
            findings.push(format!(
                "{operation} answered {status} was never exercised: the test no longer covers what the client reads"
            ));
        }
    }
    // Every success the client parsed has its reads listed above.
    for (operation, status) in &answered {
        let listed = READS.iter().any(|(o, s, _)| o == operation && s == status);
        if (200..300).contains(status) && !listed {
            findings.push(format!(
                "{operation} answered {status}, whose reads are not listed in READS"
            ));
        }
    }
    for (known, why) in KNOWN {
        let before = findings.len();
        findings.retain(|f| f != known);
        if findings.len() == before {
            findings.push(format!(
                "no longer found, so remove it from KNOWN: {known} ({why})"
            ));
        }
    }
    assert!(
        findings.is_empty(),
        "{} disagreement(s) with {} over {} exchanges:\n{}",
        findings.len(),
        description.source(),
        exchanges.len(),
        findings.join("\n")
    );
}

// The attacker's side, against the real description: a client or a fake that leaves it
// is caught, and the finding names the operation and the schema's complaint — so a
// description that would pass anything (a conversion gone wrong) fails here.
#[tokio::test]
async fn a_request_or_answer_github_would_not_make_is_named() {
    let Some(description) = description() else {
        return;
    };
    let fake = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    fake.create_repo_with(REPO, &[("README.md", "hi\n")])
        .unwrap();
    let issue = fake.create_issue(REPO, "broken", "it is", "alice");
    let api = fake.api_url();
    let client = reqwest::Client::new();
    let writer = Writer {
        client: &client,
        forge: Forge::GitHub,
        api_url: &api,
        token: Some(TOKEN),
        repo: REPO,
    };
    writer
        .comment(issue, &text("On it."), "<!-- plue:run:1:started -->")
        .await
        .unwrap();
    let prefix = Flavor::GitHub.api_prefix();
    let exchanges = fake.requests();
    let posted = exchanges
        .iter()
        .find(|r| r.method == "POST")
        .expect("the comment was posted");
    assert!(description.check(prefix, posted).findings.is_empty());

    let mut wrong = posted.clone();
    wrong.body = serde_json::json!({"body": 7});
    let answer = wrong.answer.as_mut().unwrap();
    answer.body.as_object_mut().unwrap().remove("html_url");
    answer.body["user"]["login"] = serde_json::json!(null);
    wrong.query = "per_page=100".into();
    let findings = description.check(prefix, &wrong).findings.join("\n");
    let operation =
        "issues/create-comment (POST /repos/{owner}/{repo}/issues/{issue_number}/comments)";
    for expected in [
        format!("{operation}: query parameter 'per_page' is not declared"),
        format!("{operation}: the request's body at /body does not validate"),
        format!("{operation}: answer 201's body at / does not validate"),
        "\"html_url\" is a required property".to_string(),
        format!("{operation}: answer 201's body at /user"),
    ] {
        assert!(
            findings.contains(&expected),
            "{expected}\nnot in:\n{findings}"
        );
    }

    let mut elsewhere = posted.clone();
    elsewhere.method = "PUT".into();
    let findings = description.check(prefix, &elsewhere).findings;
    assert!(
        findings[0].contains("no operation of @octokit/openapi 23.0.2"),
        "{findings:?}"
    );
    let mut undeclared = posted.clone();
    undeclared.answer.as_mut().unwrap().status = 502;
    let findings = description.check(prefix, &undeclared).findings.join("\n");
    assert!(
        findings.contains("answered 502, a status the operation does not declare"),
        "{findings}"
    );
}
