//! Check runs end to end (issue 50 item 2), with the real `plue serve` as a GitHub App: a
//! repository served through the App (testkit's fake GitHub in App mode, which refuses
//! personal tokens and needs `checks: write` for check runs) and one with a personal token
//! on another fake GitHub, each running a workflow whose step fails after printing
//! `::error file=…,line=…::` and `::warning …::` lines.
//!
//! What is proven: the App repository's failed run leaves one completed check run on the
//! commit it ran at — conclusion `failure`, the failure summary naming the failed step and
//! its reason, the annotations on their files and lines, `details_url` the run's page, a
//! secret the step printed in an annotation masked — and no commit status; the token
//! repository's run gets commit statuses (pending, then failure) and no check run.

use crate::support;
use std::time::Duration;

use crate::support::{
    client, deliver_webhook, free_port, run_ids, wait_for, webhook_fixture, Sandbox,
};
use serde_json::{json, Value};
use testkit::forge::app::{AppConfig, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

const SECRET: &str = "webhook-secret-of-the-check-runs-test";
const PERSONAL: &str = "personal-token-of-the-token-repository";
const APP_REPO: &str = "acme/app";
const TOKEN_REPO: &str = "acme/tokened";
const PUBLIC_URL: &str = "https://plue.example.com";
/// A repository secret the failing step prints inside an annotation.
const LEAKED: &str = "s3cr3t-value-the-step-prints";

/// Fails after three annotations, one of them holding the repository's secret.
const CI: &str = r#"
def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.on_push()], steps=[
        Step.bash("build", "echo '::error file=src/lib.rs,line=3,endLine=4,title=Type error::expected u8'; echo '::warning file=README.md,line=1::stale'; echo \"::error file=src/main.rs,line=9::token $LEAK\"; exit 3", secrets=["LEAK"]),
    ])
"#;

/// Registers `repo` of `forge` on the engine (with `token`, if any) and sets its secret.
async fn register(engine: &str, forge: &FakeForge, repo: &str, token: Option<&str>) {
    let mut body = json!({
        "name": repo,
        "clone_url": forge.clone_url(repo),
        "forge": "github",
        "webhook_secret": SECRET,
        "api_url": forge.api_url(),
    });
    if let Some(token) = token {
        body["api_token"] = json!(token);
    }
    let response = client()
        .post(format!("{engine}/api/repos"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let response = client()
        .put(format!("{engine}/api/repos/{repo}/secrets/LEAK"))
        .json(&json!({"value": LEAKED}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

/// Delivers a push of `sha` to main of `repo`; the run it started.
async fn push(engine: &str, repo: &str, sha: &str) -> i64 {
    let mut payload = webhook_fixture("github/push-new-branch.json");
    payload["repository"]["full_name"] = json!(repo);
    payload["repository"]["default_branch"] = json!("main");
    payload["ref"] = json!("refs/heads/main");
    payload["after"] = json!(sha);
    let (status, answer) = deliver_webhook(
        engine,
        "github",
        "push",
        &format!("push-{repo}"),
        &payload,
        SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let runs = run_ids(&answer);
    assert_eq!(runs.len(), 1, "{answer}");
    runs[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_a_check_run_with_its_summary_and_annotations_on_the_apps_repository() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("check-runs");
    let app_forge = FakeForge::start(Flavor::GitHub, "no-personal-token-works-here").unwrap();
    let app_sha = app_forge
        .create_repo_with(APP_REPO, &[(".plue/ci.plue.py", CI)])
        .unwrap();
    app_forge.enable_app(AppConfig::test(Duration::from_secs(600)));
    let token_forge = FakeForge::start(Flavor::GitHub, PERSONAL).unwrap();
    let token_sha = token_forge
        .create_repo_with(TOKEN_REPO, &[(".plue/ci.plue.py", CI)])
        .unwrap();
    let key = sb.write_private("app-key.pem", APP_KEY_PEM);
    let data = sb.path("data");
    let app_api = app_forge.api_url();
    let engine = sb
        .serve(
            "engine",
            free_port(),
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--runners",
                "2",
                "--heartbeat-ms",
                "200",
                "--public-url",
                PUBLIC_URL,
                "--github-app-id",
                "4242",
                "--github-app-key-file",
                key.to_str().unwrap(),
                "--github-app-api-url",
                &app_api,
            ],
        )
        .await;
    register(&engine.url, &app_forge, APP_REPO, None).await;
    register(&engine.url, &token_forge, TOKEN_REPO, Some(PERSONAL)).await;
    let app_run = push(&engine.url, APP_REPO, &app_sha).await;
    let token_run = push(&engine.url, TOKEN_REPO, &token_sha).await;

    let check = wait_for(
        Duration::from_secs(120),
        "a completed check run",
        || async {
            app_forge
                .check_runs(APP_REPO)
                .into_iter()
                .find(|c| c.status == "completed")
        },
    )
    .await;
    assert_eq!(app_forge.check_runs(APP_REPO).len(), 1);
    assert_eq!(check.head_sha, app_sha);
    assert_eq!(check.name, "ci");
    assert_eq!(check.conclusion.as_deref(), Some("failure"));
    assert_eq!(
        check.external_id.as_deref(),
        Some(app_run.to_string().as_str())
    );
    assert_eq!(
        check.details_url.as_deref(),
        Some(format!("{PUBLIC_URL}/runs/{app_run}").as_str())
    );
    // The run page links the check run, on the repository's forge, without its credential.
    let cookie = support::dashboard_session(&engine.url, support::ADMIN_TOKEN).await;
    let page = support::dashboard_page(&format!("{}/runs/{app_run}", engine.url), &cookie).await;
    let repo_page = app_forge.clone_url(APP_REPO);
    let repo_page = repo_page.trim_end_matches(".git");
    assert!(
        // As the template escapes it (`/` is `&#x2f;` in an attribute).
        page.contains(&format!("{repo_page}/runs/{}\"", check.id).replace('/', "&#x2f;")),
        "the run page does not link check run {}: {page}",
        check.id
    );
    let summary = check.summary.clone().unwrap_or_default();
    assert!(summary.contains("Step `build` failed"), "{summary}");
    assert!(summary.contains(&format!("/runs/{app_run}")), "{summary}");
    let mut annotations: Vec<(String, u64, u64, String, String)> = check
        .annotations
        .iter()
        .map(|a| {
            (
                a.path.clone(),
                a.start_line,
                a.end_line,
                a.annotation_level.clone(),
                a.message.clone(),
            )
        })
        .collect();
    annotations.sort();
    assert_eq!(annotations.len(), 3, "{annotations:?}");
    assert_eq!(
        annotations[0],
        ("README.md".into(), 1, 1, "warning".into(), "stale".into())
    );
    assert_eq!(
        annotations[1],
        (
            "src/lib.rs".into(),
            3,
            4,
            "failure".into(),
            "expected u8".into()
        )
    );
    assert_eq!(annotations[2].0, "src/main.rs");
    let title = check
        .annotations
        .iter()
        .find(|a| a.path == "src/lib.rs")
        .and_then(|a| a.title.clone());
    assert_eq!(title.as_deref(), Some("Type error"));
    // Nothing of what reached the forge holds the secret the step printed.
    for check in app_forge.check_runs(APP_REPO) {
        let text = format!("{check:?}");
        assert!(!text.contains(LEAKED), "{text}");
    }
    for request in app_forge.requests() {
        assert!(
            !request.body.to_string().contains(LEAKED),
            "{}",
            request.path
        );
    }
    assert!(
        app_forge.statuses(APP_REPO).is_empty(),
        "{:?}",
        app_forge.statuses(APP_REPO)
    );

    // The repository with a personal token keeps commit statuses, and gets no check run.
    let statuses = wait_for(Duration::from_secs(120), "the final status", || async {
        let statuses = token_forge.statuses(TOKEN_REPO);
        statuses
            .iter()
            .any(|s| s.state == "failure")
            .then_some(statuses)
    })
    .await;
    assert!(statuses.iter().all(|s| s.sha == token_sha), "{statuses:?}");
    assert_eq!(statuses[0].state, "pending", "{statuses:?}");
    assert_eq!(statuses[0].context, "plue/ci");
    assert_eq!(
        statuses.last().unwrap().target_url,
        format!("{PUBLIC_URL}/runs/{token_run}")
    );
    assert!(token_forge.check_runs(TOKEN_REPO).is_empty());
    let view: Value =
        support::get_json(&client(), &format!("{}/api/runs/{app_run}", engine.url)).await;
    assert_eq!(view["status"], "failed", "{view}");
}
