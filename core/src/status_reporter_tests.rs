//! The reporter for a repository served through the GitHub App, against testkit's fake
//! GitHub in App mode: check runs, never statuses, on the run's commit and on the head of
//! the pull request it opened.

use std::collections::BTreeMap;
use std::time::Duration;

use evaluator::plan::{Plan, Step};
use plue_forge::auth::GitHubApp;
use plue_store::{NewProposal, NewRepo, NewRun, RunRepo, StepChange};
use testkit::forge::app::{AppConfig, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

use super::*;
use crate::outbound_wall::Walls;

const PERSONAL: &str = "personal-token-that-opens-the-pull-request";
const REPO: &str = "acme/app";

/// Opens a pull request of `branch` on `forge` with its personal token (before App mode).
async fn open_pull(forge: &FakeForge, branch: &str) -> u64 {
    let response = reqwest::Client::new()
        .post(format!("{}/repos/{REPO}/pulls", forge.api_url()))
        .bearer_auth(PERSONAL)
        .json(&serde_json::json!({"title": "fix", "head": branch, "base": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let pull: serde_json::Value = response.json().await.unwrap();
    pull["number"].as_u64().unwrap()
}

#[tokio::test]
async fn an_app_repository_gets_check_runs_on_its_commit_and_its_agents_pull_request() {
    let forge = FakeForge::start(Flavor::GitHub, PERSONAL).unwrap();
    let sha = forge.create_repo_with(REPO, &[("a", "a")]).unwrap();
    let head = forge
        .commit_files(REPO, "fix", "main", &[("a", "b")])
        .unwrap();
    let number = open_pull(&forge, "fix").await;
    forge.enable_app(AppConfig::test(Duration::from_secs(600)));

    let (store, _dir) = plue_store::testing::sqlite().await;
    let vault = plue_vault::Vault::unkeyed();
    let api_url = forge.api_url();
    let clone_url = forge.clone_url(REPO);
    let repo = store
        .create_repo(&NewRepo {
            name: REPO,
            clone_url: &clone_url,
            forge: "github",
            webhook_secret_sealed: "plain:s",
            api_url: Some(&api_url),
            api_token_sealed: None,
            default_branch: Some("main"),
            forge_repo_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    let plan = Plan::new("ci", vec![Step::bash("build", "exit 1")]);
    let json = serde_json::to_string(&plan).unwrap();
    let run = store
        .create_run(
            &NewRun {
                workflow_source: REPO,
                event: "push",
                sha: &sha,
                repo: Some(RunRepo {
                    repo_id: repo.id,
                    secrets_allowed: true,
                }),
                ..plue_store::testing::local_run(&plan, &json)
            },
            4,
        )
        .await
        .unwrap()
        .id;
    let (claimed, _, _) = plue_store::testing::claim_first_step(&store, run, "r").await;
    store
        .record_proposals(
            claimed.attempt_id,
            &[NewProposal {
                kind: "pull_request".into(),
                payload: "{}".into(),
            }],
            plue_types::status::ProposalState::Applying,
            None,
        )
        .await
        .unwrap();
    let proposal = store.list_for_run(run).await.unwrap()[0].id;
    let url = format!("{}/{REPO}/pull/{number}", forge.url());
    assert!(store.mark_applied(proposal, &url).await.unwrap());
    plue_store::testing::advance_with(&store, plue_store::RunToAdvance::ungrouped(run), |_| {
        vec![StepChange::FinishRun {
            status: plue_types::status::RunStatus::Failed,
            reason: Some("failed steps: build".into()),
        }]
    })
    .await
    .unwrap();

    let app = GitHubApp::new(4242, APP_KEY_PEM)
        .unwrap()
        .with_api_url(Some(api_url.clone()));
    let auth = ForgeAuth::new(vault.clone(), Some(app));
    let public_url = "https://plue.example.com".to_string();
    let reporter = StatusReporter {
        store: store.clone(),
        auth: auth.clone(),
        client: std::sync::OnceLock::new(),
        public_url: public_url.clone(),
        walls: Walls::new(store.clone(), vault, BTreeMap::new(), public_url).with_forge_auth(auth),
    };
    // The pending report, then the final one (a run's reports go one after the other).
    for _ in 0..4 {
        reporter.deliver_due().await.unwrap();
    }
    let reports = store.status_reports_of_run(run).await.unwrap();
    assert!(reports.iter().all(|r| r.1), "{reports:?}");

    let checks = forge.check_runs(REPO);
    assert_eq!(checks.len(), 2, "{checks:?}");
    for (check, on) in [(&checks[0], &sha), (&checks[1], &head)] {
        assert_eq!(&check.head_sha, on);
        assert_eq!(check.name, "ci");
        assert_eq!(check.conclusion.as_deref(), Some("failure"), "{check:?}");
        assert_eq!(check.external_id, Some(run.to_string()));
        let summary = check.summary.as_deref().unwrap_or_default();
        assert!(summary.contains("failed steps: build"), "{summary}");
        assert!(summary.contains(&url), "names the pull request: {summary}");
    }
    assert!(
        forge.statuses(REPO).is_empty(),
        "{:?}",
        forge.statuses(REPO)
    );
    // Its ids are remembered: the first one, created by the pending report, was completed.
    assert_eq!(
        store.check_run_id(run, &sha).await.unwrap(),
        Some(checks[0].id as i64)
    );
    // Every check-run request carried an installation token allowed to write checks.
    let tokens = forge.installation_tokens();
    assert!(tokens
        .iter()
        .any(|t| t.permissions.get("checks").map(String::as_str) == Some("write")));
}

// regression (issue 70): a check-run write whose installation token GitHub refused (revoked
// before its planned refresh) made the engine forget another use's token, so the refused
// one was presented 4–5 times over 30 s. Now the refused one is forgotten, one new token
// minted, and the report delivered in the same pass.
#[tokio::test]
async fn a_revoked_report_token_is_renewed_once_and_the_check_run_completed() {
    let forge = FakeForge::start(Flavor::GitHub, PERSONAL).unwrap();
    let sha = forge.create_repo_with(REPO, &[("a", "a")]).unwrap();
    forge.enable_app(AppConfig::test(Duration::from_secs(600)));
    let (store, _dir) = plue_store::testing::sqlite().await;
    let vault = plue_vault::Vault::unkeyed();
    let api_url = forge.api_url();
    let clone_url = forge.clone_url(REPO);
    let repo = store
        .create_repo(&NewRepo {
            name: REPO,
            clone_url: &clone_url,
            forge: "github",
            webhook_secret_sealed: "plain:s",
            api_url: Some(&api_url),
            api_token_sealed: None,
            default_branch: Some("main"),
            forge_repo_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    let plan = Plan::new("ci", vec![Step::bash("build", "true")]);
    let json = serde_json::to_string(&plan).unwrap();
    let run = store
        .create_run(
            &NewRun {
                workflow_source: REPO,
                event: "push",
                sha: &sha,
                repo: Some(RunRepo {
                    repo_id: repo.id,
                    secrets_allowed: true,
                }),
                ..plue_store::testing::local_run(&plan, &json)
            },
            4,
        )
        .await
        .unwrap()
        .id;
    let app = GitHubApp::new(4242, APP_KEY_PEM)
        .unwrap()
        .with_api_url(Some(api_url.clone()));
    let auth = ForgeAuth::new(vault.clone(), Some(app));
    let public_url = "https://plue.example.com".to_string();
    let reporter = StatusReporter {
        store: store.clone(),
        auth: auth.clone(),
        client: std::sync::OnceLock::new(),
        public_url: public_url.clone(),
        walls: Walls::new(store.clone(), vault, BTreeMap::new(), public_url).with_forge_auth(auth),
    };
    // The pending report creates the check run with a report token, which stays cached.
    assert_eq!(reporter.deliver_due().await.unwrap(), 1);
    let mark = forge.revocation_mark();
    forge.revoke_tokens_at_next_use(None);
    plue_store::testing::advance_with(&store, plue_store::RunToAdvance::ungrouped(run), |_| {
        vec![StepChange::FinishRun {
            status: plue_types::status::RunStatus::Succeeded,
            reason: None,
        }]
    })
    .await
    .unwrap();
    assert_eq!(reporter.deliver_due().await.unwrap(), 1, "in the same pass");
    assert_eq!(forge.check_renewals(&mark), Ok(1));
    let refused = &forge.token_refusals()[0];
    assert_eq!(
        refused.permissions.get("checks").map(String::as_str),
        Some("write"),
        "the report token was refused: {refused:?}"
    );
    let checks = forge.check_runs(REPO);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].conclusion.as_deref(), Some("success"));
    let reports = store.status_reports_of_run(run).await.unwrap();
    assert!(reports.iter().all(|r| r.1), "{reports:?}");
}
