//! The App's installation deliveries: checked with the App's secret, judged by the accounts
//! the operator accepts, recorded, and registering repositories only when an admin said so;
//! deliveries through a refused installation start nothing.

use axum::body::{to_bytes, Body};
use axum::http::Request;
use axum::Router;
use plue_vault::Vault;
use tower::ServiceExt;

use super::super::{router, WebhookState};
use super::*;

const APP_SECRET: &str = "the-apps-webhook-secret";

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/tests/fixtures/webhooks/github")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn app(hooks: Option<AppHooks>) -> (Router, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let state = WebhookState {
        store: store.clone(),
        vault: Vault::unkeyed(),
        registry: None,
        app: hooks,
    };
    (router(state), store, dir)
}

/// The App's hooks, registering installed repositories when `register`, accepting the
/// installations on `owners`.
fn hooks_of(register: bool, owners: &[&str]) -> Option<AppHooks> {
    Some(AppHooks {
        secret: Token::new(APP_SECRET.into()),
        owners: InstallationOwners::new(owners),
        register: register.then(|| Registering {
            api_url: Some("https://ghe.example.com/api/v3".into()),
        }),
    })
}

/// [`hooks_of`] accepting the fixtures' account, Codertocat.
fn hooks(register: bool) -> Option<AppHooks> {
    hooks_of(register, &["Codertocat"])
}

/// A push to `main` of `name` (forge id `id`), through installation `installation`.
fn push(name: &str, id: i64, installation: Option<i64>) -> String {
    let mut push = serde_json::json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
        "repository": {"full_name": name, "id": id},
    });
    if let Some(installation) = installation {
        push["installation"] = serde_json::json!({"id": installation});
    }
    push.to_string()
}

/// Registers `name` by hand, checked with `secret`, as an admin would.
async fn register_by_hand(store: &Store, name: &str, secret: &str) {
    store
        .create_repo(&NewRepo {
            name,
            clone_url: "https://github.com/none.git",
            forge: "github",
            webhook_secret_sealed: &format!("plain:{secret}"),
            api_url: None,
            api_token_sealed: None,
            default_branch: None,
            forge_repo_id: None,
        })
        .await
        .unwrap()
        .unwrap();
}

async fn deliver(app: &Router, event: &str, body: &[u8], secret: &str) -> (u16, String) {
    let request = Request::post("/webhooks/github")
        .header("x-github-event", event)
        .header("x-github-delivery", "d-1")
        .header(
            "x-hub-signature-256",
            format!("sha256={}", signature::sign(body, secret)),
        )
        .body(Body::from(body.to_vec()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

// The attack: a sender without the App's secret forges an installation that adds its own
// repositories, or the engine is no App at all; nothing is recorded either way.
#[tokio::test]
async fn an_installation_without_the_apps_secret_is_refused() {
    let created = fixture("installation-created.json");
    for (hooks, secret) in [
        (None, APP_SECRET),
        (hooks(true), "a guess"),
        (hooks(true), ""),
    ] {
        let (app, store, _dir) = app(hooks).await;
        let (status, body) = deliver(&app, "installation", &created, secret).await;
        assert_eq!(status, 401, "{body}");
        assert!(store.installations().await.unwrap().is_empty());
        assert!(store.list_repos().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn without_the_flag_installations_are_recorded_and_nothing_is_registered() {
    let (app, store, _dir) = app(hooks(false)).await;
    let (status, body) = deliver(
        &app,
        "installation",
        &fixture("installation-created.json"),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("registered"), "{body}");
    let (status, _) = deliver(
        &app,
        "installation_repositories",
        &fixture("installation_repositories-added.json"),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200);
    let listed = store.installations().await.unwrap();
    assert_eq!(
        (listed[0].id, listed[0].account.as_str()),
        (957387, "Codertocat")
    );
    assert_eq!(
        store.installation_repos(957387).await.unwrap(),
        ["Codertocat/Hello-World", "Codertocat/Space"]
    );
    assert!(store.list_repos().await.unwrap().is_empty());
}

#[tokio::test]
async fn with_the_flag_an_added_repository_is_registered_as_an_app_repository() {
    let (app, store, _dir) = app(hooks(true)).await;
    let created = fixture("installation-created.json");
    let (status, body) = deliver(&app, "installation", &created, APP_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""registered":["Codertocat/Hello-World"]"#),
        "{body}"
    );
    let repos = store.list_repos().await.unwrap();
    assert_eq!(repos.len(), 1);
    let repo = &repos[0];
    assert_eq!(
        (
            repo.forge.as_str(),
            repo.clone_url.as_str(),
            repo.api_url.as_deref()
        ),
        (
            "github",
            "https://ghe.example.com/Codertocat/Hello-World.git",
            Some("https://ghe.example.com/api/v3")
        )
    );
    // No personal token (so served through the App), readable by nobody yet.
    assert_eq!(
        (repo.api_token.as_deref(), repo.public_read),
        (None, Some(false))
    );
    // Bound to the repository id the installation named.
    assert_eq!(repo.forge_repo_id, Some(186853002));
    // Its pushes are signed with the App's secret, and now get past the signature and the
    // installation's judgement.
    let push = push("Codertocat/Hello-World", 186853002, Some(957387));
    let (status, body) = deliver(&app, "push", push.as_bytes(), APP_SECRET).await;
    assert_eq!(status, 501, "past the signature, no evaluator here: {body}");
    // Delivered again: nothing new.
    let (_, body) = deliver(&app, "installation", &created, APP_SECRET).await;
    assert!(!body.contains("registered"), "{body}");
    assert_eq!(store.list_repos().await.unwrap().len(), 1);
    // A suspended installation registers nothing.
    let (status, _) = deliver(
        &app,
        "installation",
        &fixture("installation-suspend.json"),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(store.list_repos().await.unwrap().len(), 1);
}

#[test]
fn clone_urls_follow_the_apps_github() {
    let on = |api: Option<&str>| Registering {
        api_url: api.map(String::from),
    };
    assert_eq!(on(None).clone_url("a/b"), "https://github.com/a/b.git");
    assert_eq!(
        on(Some("https://api.github.com/")).clone_url("a/b"),
        "https://github.com/a/b.git"
    );
    assert_eq!(
        on(Some("http://127.0.0.1:9/api/v3")).clone_url("a/b"),
        "http://127.0.0.1:9/a/b.git"
    );
}

// A repository an admin registered with the App's webhook secret (as the guide says) is
// bound by its first verified delivery: whoever later takes its name and installs the App
// (GitHub signs their deliveries with the same secret) is refused. A repository with a
// secret of its own, which only its own webhook holds, is left unbound.
#[tokio::test]
async fn the_first_delivery_binds_a_repository_checked_with_the_apps_secret() {
    let (app, store, _dir) = app(hooks_of(false, &["acme"])).await;
    for (name, secret) in [("acme/app", APP_SECRET), ("acme/own", "its-own-secret")] {
        register_by_hand(&store, name, secret).await;
    }
    let push = |name: &str, id: i64| push(name, id, None);
    let (status, body) = deliver(&app, "push", push("acme/app", 41).as_bytes(), APP_SECRET).await;
    assert_eq!(status, 501, "past every check, no evaluator here: {body}");
    let bound = store.repo_by_name("acme/app").await.unwrap().unwrap();
    assert_eq!(bound.forge_repo_id, Some(41));
    let (status, body) = deliver(&app, "push", push("acme/app", 666).as_bytes(), APP_SECRET).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("now belongs to another repository"), "{body}");
    let (status, _) = deliver(&app, "push", push("acme/app", 41).as_bytes(), APP_SECRET).await;
    assert_eq!(status, 501);

    for id in [5, 6] {
        let (status, body) = deliver(
            &app,
            "push",
            push("acme/own", id).as_bytes(),
            "its-own-secret",
        )
        .await;
        assert_eq!(status, 501, "{body}");
    }
    let own = store.repo_by_name("acme/own").await.unwrap().unwrap();
    assert_eq!(own.forge_repo_id, None);
}

// The attack (issue 69): a stranger installs the public App on her own account, with an
// engine that registers installed repositories. Her installation is recorded as refused,
// with why; nothing of hers is registered; and a push from her repository — even one an
// admin registered by hand — starts nothing, is not recorded, and says why.
#[tokio::test]
async fn a_strangers_installation_is_refused_and_its_deliveries_start_nothing() {
    let (app, store, _dir) = app(hooks_of(true, &["acme"])).await;
    for (event, file) in [
        ("installation", "installation-created.json"),
        (
            "installation_repositories",
            "installation_repositories-added.json",
        ),
    ] {
        let (status, body) = deliver(&app, event, &fixture(file), APP_SECRET).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(answer.get("registered").is_none(), "{body}");
        let refused = answer["refused"][0].as_str().unwrap_or_default();
        assert!(
            refused.contains("'Codertocat'") && refused.contains("--installation-owner"),
            "{body}"
        );
    }
    assert!(store.list_repos().await.unwrap().is_empty());
    let recorded = store.installation(957387).await.unwrap().unwrap();
    assert!(
        recorded.refused.as_deref().unwrap().contains("Codertocat"),
        "{recorded:?}"
    );

    // An admin registered her repository anyway (or an older engine did): her pushes,
    // through her installation or merely signed with the App's secret, start nothing.
    register_by_hand(&store, "Codertocat/Hello-World", APP_SECRET).await;
    let repo = store
        .repo_by_name("Codertocat/Hello-World")
        .await
        .unwrap()
        .unwrap();
    for (delivery, installation) in [("p-1", Some(957387)), ("p-2", Some(4242)), ("p-3", None)] {
        let body = push("Codertocat/Hello-World", 186853002, installation);
        let request = Request::post("/webhooks/github")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", signature::sign(body.as_bytes(), APP_SECRET)),
            )
            .body(Body::from(body))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let said = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let said = String::from_utf8_lossy(&said);
        assert_eq!(status, 403, "{installation:?}: {said}");
        assert!(
            said.contains("nothing was run") && said.contains("--installation-owner"),
            "{said}"
        );
        // Not recorded: the same delivery id is still new.
        assert!(store
            .record_delivery("github", delivery, repo.id, "push")
            .await
            .unwrap());
    }
    // A repository webhook with a secret of its own (an admin set it up) is no App
    // delivery: not judged.
    register_by_hand(&store, "Codertocat/Own", "its-own-secret").await;
    let own = push("Codertocat/Own", 7, None);
    let (status, body) = deliver(&app, "push", own.as_bytes(), "its-own-secret").await;
    assert_eq!(status, 501, "past every check, no evaluator here: {body}");
}

// The operator accepts the account later (or stops accepting it): every recorded
// installation is judged again when the engine starts, and deliveries follow the list the
// engine runs with.
#[tokio::test]
async fn recorded_installations_are_judged_again_by_the_accounts_now_accepted() {
    let (app, store, _dir) = app(hooks_of(false, &[])).await;
    let (status, _) = deliver(
        &app,
        "installation",
        &fixture("installation-created.json"),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200);
    assert!(store.installations().await.unwrap()[0].refused.is_some());
    let accepting = InstallationOwners::new(["codertocat"]);
    judge_recorded_installations(&store, &accepting)
        .await
        .unwrap();
    assert_eq!(store.installations().await.unwrap()[0].refused, None);
    judge_recorded_installations(&store, &InstallationOwners::default())
        .await
        .unwrap();
    assert!(store.installations().await.unwrap()[0].refused.is_some());
}
