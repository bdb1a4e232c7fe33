//! The applier against the fake GitHub in App-only mode when GitHub revokes the tokens
//! the engine cached (issue 70): each refused token — the pull request lookup's, the
//! mirror fetch's, the push's — is forgotten, one new one minted, and the proposal lands
//! in the same pass.

use std::time::Duration;

use plue_forge::auth::{ForgeAuth, GitHubApp, Use};
use plue_store::testing::stores;
use plue_store::testing::Sql;
use plue_types::status::ProposalState;
use testkit::forge::app::{AppConfig, Presented, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

use super::tests::finished_run_with_proposal;
use super::*;

const REPO: &str = "acme/app";

/// The fake GitHub with `REPO` (one commit) in App mode, that commit, and a diff against it.
fn github() -> (FakeForge, String, String) {
    let forge = FakeForge::start(Flavor::GitHub, "personal-token-never-given").unwrap();
    let base = forge
        .create_repo_with(REPO, &[("src/lib.rs", "fn a() {}\n")])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("bash")
            .arg("-ec")
            .arg(script)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Cloned before the App mode, which lets nothing anonymous through.
    sh(&format!("git clone -q {} .", forge.clone_url(REPO)));
    let diff = sh("printf 'fn a() { b() }\\n' > src/lib.rs; git add -A; git diff --cached");
    forge.enable_app(AppConfig::test(Duration::from_secs(3600)));
    (forge, base, diff)
}

/// `REPO` registered without a token (served through the App), a finished run of it at
/// `base` and its step's approved pull request proposing `diff`.
async fn seed(store: &Store, forge: &FakeForge, base: &str, diff: String) {
    let payload = serde_json::to_string(&Proposal::PullRequest {
        title: "Fix a".into(),
        body: "As asked.".into(),
        diff,
    })
    .unwrap();
    {
        Sql::new(
            "INSERT INTO repositories (id, name, clone_url, forge, created_at, api_url, \
                     webhook_secret) VALUES (1, $1, $2, 'github', 0, $3, 'plain:s')",
        )
        .bind(REPO)
        .bind(forge.clone_url(REPO))
        .bind(forge.api_url())
        .execute(store)
        .await;
        Sql::new(
            "INSERT INTO workflows (id, source, path, name, repo_id, created_at) \
                     VALUES (1, $1, 'w', 'fixer', 1, 0)",
        )
        .bind(REPO)
        .execute(store)
        .await;
        finished_run_with_proposal(store, base, &payload).await;
    };
}

// regression (issue 70): a push refused for its token (git's 401) was not recognised; the
// next API call's 401 forgot the token only then. Revoked at the push (the lookup before it
// passes) or at each token's next use anywhere, the proposal lands in one pass with one new
// token per refusal.
#[tokio::test]
async fn a_proposal_lands_with_one_new_token_per_revoked_one() {
    for revoked_at in [Some(Presented::GitPush), None] {
        for (store, _dir) in stores().await {
            let (forge, base, diff) = github();
            seed(&store, &forge, &base, diff).await;
            let app = GitHubApp::new(4242, APP_KEY_PEM)
                .unwrap()
                .with_api_url(Some(forge.api_url()));
            let auth = ForgeAuth::new(Vault::unkeyed(), Some(app));
            let mirrors = tempfile::tempdir().unwrap();
            let applier = Applier::new(
                store.clone(),
                Vault::unkeyed(),
                mirrors.path().to_owned(),
                crate::outbound_wall::Walls::new(
                    store.clone(),
                    Vault::unkeyed(),
                    Default::default(),
                    "http://plue".into(),
                )
                .with_forge_auth(auth.clone()),
            );
            // The tokens an earlier proposal left cached: the write and the read one.
            let repo = store.repo_by_id(1).await.unwrap().unwrap();
            auth.token(&repo, Use::Write).await.unwrap().unwrap();
            auth.git_credential(&repo).await.unwrap().unwrap();
            let mark = forge.revocation_mark();
            forge.revoke_tokens_at_next_use(revoked_at);

            assert_eq!(applier.apply_due().await.unwrap(), 1, "{revoked_at:?}");
            let pulls = forge.pulls(REPO);
            assert_eq!(pulls.len(), 1, "{revoked_at:?}: {pulls:?}");
            assert_eq!(pulls[0].author, "plue-test-app[bot]");
            let refusals = forge.token_refusals();
            let renewed = forge.check_renewals(&mark);
            match revoked_at {
                Some(Presented::GitPush) => {
                    assert_eq!(renewed, Ok(1), "{refusals:#?}");
                    assert_eq!(refusals[0].presented, Presented::GitPush);
                    assert_eq!(
                        refusals[0].permissions.get("contents").map(String::as_str),
                        Some("write")
                    );
                }
                // The pull request lookup's write token, the mirror fetch's read token.
                _ => assert_eq!(renewed, Ok(2), "{refusals:#?}"),
            }
            let row = store.list_for_run(1).await.unwrap().remove(0);
            assert_eq!(row.state, ProposalState::Applied, "{row:?}");
        }
    }
}
