//! Roles that follow the forge, end to end: an in-process engine refreshing forge roles
//! every 300 ms, a repository on a fake GitHub whose collaborator-permission API says what
//! the test sets, and a Plue user linked to a GitHub login. What the user may do on the
//! repository is probed through the API (read it, dispatch as a writer, list members as a
//! maintainer), never read from the store.

use std::time::Duration;

use serde_json::json;
use testkit::forge::{FakeForge, Flavor};
use testkit::oauth::{FakeOAuth, OAuthFlavor};

use crate::support::{self, Sandbox};

const ADMIN: &str = support::ADMIN_TOKEN;
const KEY: &str = "a vault key long enough for the forge role tests";
const REPO: &str = "acme/app";
const FORGE_TOKEN: &str = "ghp_forge_roles_token_0123456789";
/// Well past a few refreshes.
const LIMIT: Duration = Duration::from_secs(20);

/// A fake GitHub holding [`REPO`] (its API answers [`FORGE_TOKEN`]), seeded in `sb`.
fn forge_with_repo(sb: &Sandbox) -> FakeForge {
    let forge = FakeForge::start(Flavor::GitHub, FORGE_TOKEN).unwrap();
    let seed = sb.path("seed");
    support::git_repo(&seed, &[("README.md", "hello\n")]);
    forge.create_repo_from(REPO, &seed).unwrap();
    forge
}

/// Registers [`REPO`] of `forge` (its API and credential) at the engine at `url`.
async fn register(http: &reqwest::Client, url: &str, forge: &FakeForge) {
    let registered = json!({
        "name": REPO,
        "clone_url": forge.clone_url(REPO),
        "forge": "github",
        "webhook_secret": "a webhook secret of the forge role tests",
        "api_url": forge.api_url(),
        "api_token": FORGE_TOKEN,
    });
    let (status, body) = support::call_json(
        http,
        reqwest::Method::POST,
        &format!("{url}/api/repos"),
        Some(ADMIN),
        Some(&registered),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// The highest role `token` acts with on [`REPO`], as the API shows it.
async fn role_of(http: &reqwest::Client, url: &str, token: &str) -> Option<&'static str> {
    let (status, _) = support::call_json(
        http,
        reqwest::Method::GET,
        &format!("{url}/api/repos/{REPO}"),
        Some(token),
        None,
    )
    .await;
    if status == 404 {
        return None;
    }
    let body = json!({"workflow": "ci.plue.py"});
    let (status, _) = support::call_json(
        http,
        reqwest::Method::POST,
        &format!("{url}/api/repos/{REPO}/dispatch"),
        Some(token),
        Some(&body),
    )
    .await;
    if status == 403 {
        return Some("reader");
    }
    let (status, _) = support::call_json(
        http,
        reqwest::Method::GET,
        &format!("{url}/api/repos/{REPO}/members"),
        Some(token),
        None,
    )
    .await;
    Some(if status == 403 {
        "writer"
    } else {
        "maintainer"
    })
}

/// Waits until `token` acts with `role` on [`REPO`].
async fn becomes(http: &reqwest::Client, url: &str, token: &str, role: Option<&'static str>) {
    support::wait_for(LIMIT, &format!("the role to become {role:?}"), || async {
        (role_of(http, url, token).await == role).then_some(())
    })
    .await;
}

/// The forge's word becomes the role within a refresh, up and down and away; Plue's own
/// grant overrides it (downwards too) while it stands; an unlinked login and a disabled
/// user get nothing from the forge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_s_role_follows_their_forge_permission_under_plue_s_own_grants() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("forge-roles");
    let forge = forge_with_repo(&sb);
    let mut config = support::engine_config(support::RUNNER_TOKEN, ADMIN, KEY);
    config.forge_roles_every = Some(Duration::from_millis(300));
    let engine = support::start_in_process(&sb.path("data"), config).await;
    let http = reqwest::Client::new();
    let url = engine.url.clone();
    register(&http, &url, &forge).await;
    let store = engine.executor.store();
    let repo_id = store.repo_by_name(REPO).await.unwrap().unwrap().id;
    let (bob, _, token) = support::user_with_token(store, "bob", &[]).await;
    // A login the forge knows, but not linked yet: nothing.
    forge.set_permission("bob-gh", "write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(role_of(&http, &url, &token).await, None);

    store
        .link_forge_login(bob, "github", "bob-gh")
        .await
        .unwrap();
    becomes(&http, &url, &token, Some("writer")).await;
    forge.set_permission("bob-gh", "admin");
    becomes(&http, &url, &token, Some("maintainer")).await;
    forge.set_permission("bob-gh", "read");
    becomes(&http, &url, &token, Some("reader")).await;

    // Plue's own grant overrides the forge's, downwards too.
    forge.set_permission("bob-gh", "admin");
    becomes(&http, &url, &token, Some("maintainer")).await;
    store.grant_role(repo_id, bob, "reader").await.unwrap();
    assert_eq!(role_of(&http, &url, &token).await, Some("reader"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(role_of(&http, &url, &token).await, Some("reader"));
    store.revoke_role(repo_id, bob).await.unwrap();
    becomes(&http, &url, &token, Some("maintainer")).await;

    // Access lost on the forge is lost here.
    forge.set_permission("bob-gh", "none");
    becomes(&http, &url, &token, None).await;

    // A disabled user's login is asked about no more.
    forge.set_permission("bob-gh", "write");
    becomes(&http, &url, &token, Some("writer")).await;
    let (carol, _, carol_token) = support::user_with_token(store, "carol", &[]).await;
    store
        .link_forge_login(carol, "github", "carol-gh")
        .await
        .unwrap();
    forge.set_permission("carol-gh", "write");
    becomes(&http, &url, &carol_token, Some("writer")).await;
    store.disable_user(carol).await.unwrap();
    // Her forge role is no longer confirmed, and goes after two refreshes.
    support::wait_for(LIMIT, "carol's forge role to go", || async {
        store
            .forge_roles_of_user(carol)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let roles = store.forge_roles_of_user(bob).await.unwrap();
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(
        (roles[0].role.as_str(), roles[0].permission.as_str()),
        ("writer", "write")
    );
    engine.shutdown().await;
}

/// A forge sign-in learns the person's roles at once: with the periodic refresh an hour
/// away, a first GitHub sign-in as a login the forge says may write makes a writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_sign_in_learns_the_person_s_roles_at_once() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("forge-roles-sign-in");
    let forge = forge_with_repo(&sb);
    forge.set_permission("dora-gh", "write");
    let oauth = FakeOAuth::start(
        OAuthFlavor::GitHub,
        crate::sign_in::CLIENT,
        crate::sign_in::SECRET,
    );
    let mut config = support::engine_config(support::RUNNER_TOKEN, ADMIN, KEY);
    config.forge_roles_every = Some(Duration::from_secs(3600));
    config.sign_in.github = Some(crate::sign_in::forge_settings(&oauth));
    let engine = support::start_in_process(&sb.path("data"), config).await;
    oauth.register_redirect(&format!("{}/sign-in/github/callback", engine.url));
    let http = reqwest::Client::new();
    let url = engine.url.clone();
    register(&http, &url, &forge).await;

    oauth.sign_in_as("dora-gh");
    let mut browser = crate::support::sign_in::Browser::new();
    let page = browser
        .visit(&format!("{url}/sign-in/github?next=%2Frunners"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let store = engine.executor.store();
    let dora = store
        .user_of_forge_login("github", "dora-gh")
        .await
        .unwrap()
        .expect("the sign-in made dora's user");
    let (_, token) = support::new_user_token(store, dora, "probe", None, None).await;
    assert_eq!(role_of(&http, &url, &token).await, Some("writer"));
    engine.shutdown().await;
}
