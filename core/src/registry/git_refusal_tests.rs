//! A mirror's fetch when GitHub refuses its installation token before its planned refresh
//! (issue 70), against the fake GitHub in App-only mode: the token is forgotten and the
//! fetch made again with one new token; a given credential's refusal says so.

use std::time::Duration;

use plue_forge::auth::{ForgeAuth, GitHubApp, Refusable};
use plue_store::RepoRow;
use plue_types::protocol::GitCredential;
use testkit::forge::app::{AppConfig, Presented, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

use super::Mirror;

const REPO: &str = "acme/app";

fn repo(forge: &FakeForge) -> RepoRow {
    RepoRow {
        id: 1,
        name: REPO.into(),
        clone_url: forge.clone_url(REPO),
        forge: "github".into(),
        webhook_secret: String::new(),
        api_url: Some(forge.api_url()),
        api_token: None,
        default_branch: None,
        created_at: 0,
        public_read: None,
        forge_repo_id: None,
    }
}

// regression (issue 70): a mirror fetch whose token was revoked failed the delivery, and
// the next delivery too: nothing forgot the token.
#[tokio::test]
async fn a_revoked_read_token_is_renewed_once_and_the_fetch_made() {
    let forge = FakeForge::start(Flavor::GitHub, "personal-token-never-given").unwrap();
    let sha = forge.create_repo_with(REPO, &[("a", "a")]).unwrap();
    forge.enable_app(AppConfig::test(Duration::from_secs(3600)));
    let app = GitHubApp::new(4242, APP_KEY_PEM)
        .unwrap()
        .with_api_url(Some(forge.api_url()));
    let auth = ForgeAuth::new(plue_vault::Vault::unkeyed(), Some(app));
    let repo = repo(&forge);
    let tmp = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(tmp.path().join("m.git"))
        .await
        .unwrap()
        .with_forge_credential(&auth, &repo);
    assert_eq!(
        mirror.remote_head_branch(&repo.clone_url).await.unwrap(),
        "main"
    );
    let cached = auth.git_credential(&repo).await.unwrap().unwrap();
    let mark = forge.revocation_mark();
    forge.revoke_tokens_at_next_use(Some(Presented::GitFetch));
    assert_eq!(mirror.resolve(&repo.clone_url, "main").await.unwrap(), sha);
    assert_eq!(forge.check_renewals(&mark), Ok(1));
    assert_ne!(auth.git_credential(&repo).await.unwrap().unwrap(), cached);

    // A credential given as it is cannot be renewed: its refusal says so, and carries it
    // for whoever gave it.
    let given = Mirror::open(tmp.path().join("given.git"))
        .await
        .unwrap()
        .with_credential(&repo.clone_url, Some(cached.clone()));
    let refused = given.fetch(&repo.clone_url, &["main"]).await.unwrap_err();
    let said = format!("{refused:#}");
    assert!(refused.refusal().is_some(), "{said}");
    assert!(!said.contains(cached.token()), "{said}");
    let unknown = GitCredential::new("ghs_never_handed_out".into());
    let stranger = Mirror::open(tmp.path().join("stranger.git"))
        .await
        .unwrap()
        .with_credential(&repo.clone_url, Some(unknown));
    assert!(stranger
        .fetch(&repo.clone_url, &["main"])
        .await
        .unwrap_err()
        .refusal()
        .is_some());
}
