//! The GitHub App's installation deliveries through the real `plue serve` (issue 50 item
//! 1): checked with `--github-app-webhook-secret-file`, recorded and listed by `GET
//! /api/installations` (installation admins only); the repositories they name registered
//! only with `--register-installed-repos`.

#[allow(dead_code)] // each test binary uses part of the support module
mod support;

use serde_json::{json, Value};
use support::{deliver_webhook, free_port, webhook_fixture, Engine, Sandbox};

const APP_SECRET: &str = "the-github-apps-webhook-secret";
const ADMIN: &str = "admin-token-of-the-installations-test";

async fn engine(sb: &Sandbox, name: &str, extra: &[&str]) -> Engine {
    let secret = sb.write(&format!("{name}-secret"), &format!("{APP_SECRET}\n"));
    let data = sb.path(&format!("{name}-data"));
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--runners",
        "0",
        "--admin-token",
        ADMIN,
        "--github-app-webhook-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    sb.serve(name, free_port(), &args).await
}

async fn get(engine: &Engine, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", engine.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_are_listed_and_registered_only_when_the_admin_said_so() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("installations");
    let created = webhook_fixture("github/installation-created.json");

    // Without the flag: recorded, listed for the admin, nothing registered.
    let plain = engine(&sb, "plain", &[]).await;
    let (status, answer) = deliver_webhook(
        &plain.url,
        "github",
        "installation",
        "i-1",
        &created,
        "not the secret",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = deliver_webhook(
        &plain.url,
        "github",
        "installation",
        "i-2",
        &created,
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("registered").is_none(), "{answer}");
    let (status, listed) = get(&plain, "/api/installations", Some(ADMIN)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed[0]["id"], 957387);
    assert_eq!(listed[0]["account"], "Codertocat");
    assert_eq!(listed[0]["repositories"], json!(["Codertocat/Hello-World"]));
    let (status, _) = get(&plain, "/api/installations", None).await;
    assert_eq!(status, 401);
    let (_, repos) = get(&plain, "/api/repos", Some(ADMIN)).await;
    assert_eq!(repos, json!([]), "nothing registered without the flag");

    // With it: the repository is registered, served through the App (no token).
    let registering = engine(&sb, "registering", &["--register-installed-repos"]).await;
    let (status, answer) = deliver_webhook(
        &registering.url,
        "github",
        "installation",
        "i-3",
        &created,
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["registered"], json!(["Codertocat/Hello-World"]));
    let (_, repos) = get(&registering, "/api/repos", Some(ADMIN)).await;
    assert_eq!(repos[0]["name"], "Codertocat/Hello-World", "{repos}");
    assert_eq!(repos[0]["forge"], "github");
    assert_eq!(repos[0]["has_api_token"], false);
    assert_eq!(
        repos[0]["clone_url"],
        "https://github.com/Codertocat/Hello-World.git"
    );
}

// The attacker took the name Codertocat/Hello-World on GitHub (the org renamed, or the
// repository deleted) and installed the public App on their repository: GitHub signs their
// deliveries with the App's one webhook secret. The registered repository is bound to the
// id the installation named: a delivery from another repository id is refused, starts
// nothing and is not even recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_from_a_repository_that_took_the_name_is_refused() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("installations-repojacking");
    let registering = engine(&sb, "registering", &["--register-installed-repos"]).await;
    let created = webhook_fixture("github/installation-created.json");
    let (status, answer) = deliver_webhook(
        &registering.url,
        "github",
        "installation",
        "i-1",
        &created,
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["registered"], json!(["Codertocat/Hello-World"]));

    let mut push = webhook_fixture("github/push-new-branch.json");
    assert_eq!(push["repository"]["full_name"], "Codertocat/Hello-World");
    push["repository"]["id"] = json!(666_000_666);
    let (status, answer) = deliver_webhook(
        &registering.url,
        "github",
        "push",
        "taken-1",
        &push,
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let said = answer.to_string();
    assert!(
        said.contains("now belongs to another repository") && said.contains("re-register"),
        "{said}"
    );
    let (status, runs) = get(&registering, "/api/runs", Some(ADMIN)).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["runs"], json!([]), "no run started");

    // The registered repository's own deliveries still pass (a ping, which runs nothing),
    // and the refused one was not recorded: its id is no duplicate.
    let mut ping = webhook_fixture("github/ping-repo.json");
    ping["repository"]["full_name"] = json!("Codertocat/Hello-World");
    ping["repository"]["id"] = json!(186853002);
    let (status, answer) = deliver_webhook(
        &registering.url,
        "github",
        "ping",
        "taken-1",
        &ping,
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
}
