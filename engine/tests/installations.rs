//! The GitHub App's installation deliveries through the real `plue serve` (issue 50 item
//! 1, issue 69 item 2): checked with `--github-app-webhook-secret-file`, judged by the
//! accounts `--installation-owner` accepts, recorded and listed by `GET /api/installations`
//! (installation admins only) with the judgement; the repositories an accepted one names
//! registered only with `--register-installed-repos`, a refused one's deliveries starting
//! nothing. And the engine's own `--secret`s, which reach only the repositories
//! `--secret-repos` names for them, whoever registered them.

use crate::support;
use serde_json::{json, Value};
use std::time::Duration;

use crate::support::{
    client, deliver_webhook, free_port, step, wait_final, webhook_fixture, Engine, Sandbox,
};

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
    // No account accepted: refused, and shown with why.
    assert_eq!(listed[0]["accepted"], false, "{listed}");
    let (status, _) = get(&plain, "/api/installations", None).await;
    assert_eq!(status, 401);
    let (_, repos) = get(&plain, "/api/repos", Some(ADMIN)).await;
    assert_eq!(repos, json!([]), "nothing registered without the flag");

    // With it, on an account the operator accepts: the repository is registered, served
    // through the App (no token).
    let registering = engine(
        &sb,
        "registering",
        &[
            "--register-installed-repos",
            "--installation-owner",
            "codertocat",
        ],
    )
    .await;
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
    let (_, listed) = get(&registering, "/api/installations", Some(ADMIN)).await;
    assert_eq!(listed[0]["accepted"], true, "{listed}");
    assert!(listed[0].get("refused").is_none(), "{listed}");
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
    let registering = engine(
        &sb,
        "registering",
        &[
            "--register-installed-repos",
            "--installation-owner",
            "Codertocat",
        ],
    )
    .await;
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

/// The runs the engine lists (`GET /api/runs`).
async fn runs(engine: &Engine) -> Value {
    let (status, runs) = get(engine, "/api/runs", Some(ADMIN)).await;
    assert_eq!(status, 200, "{runs}");
    runs["runs"].clone()
}

// The attack (issue 69): with `--register-installed-repos`, a stranger installed the public
// App on her own account, got her repository registered, and her push ran on the engine's
// runners. Now only the accounts `--installation-owner` names are accepted: hers is
// recorded as refused, with why, and shown so; nothing of hers is registered; her
// deliveries start nothing — even after an admin registers her repository by hand, and
// after a restart that judges it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_installation_is_refused_and_her_deliveries_start_nothing() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("installations-stranger");
    let flags = [
        "--register-installed-repos",
        "--installation-owner",
        "acme,widgets",
    ];
    let mut registering = engine(&sb, "registering", &flags).await;
    for (id, event, fixture) in [
        ("s-1", "installation", "github/installation-created.json"),
        (
            "s-2",
            "installation_repositories",
            "github/installation_repositories-added.json",
        ),
    ] {
        let (status, answer) = deliver_webhook(
            &registering.url,
            "github",
            event,
            id,
            &webhook_fixture(fixture),
            APP_SECRET,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("registered").is_none(), "{answer}");
        let why = answer["refused"][0].as_str().unwrap_or_default();
        assert!(
            why.contains("'Codertocat'") && why.contains("--installation-owner"),
            "{answer}"
        );
    }
    let (_, repos) = get(&registering, "/api/repos", Some(ADMIN)).await;
    assert_eq!(repos, json!([]), "nothing of hers is registered");
    let (_, listed) = get(&registering, "/api/installations", Some(ADMIN)).await;
    assert_eq!(listed[0]["account"], "Codertocat");
    assert_eq!(listed[0]["accepted"], false, "{listed}");
    assert!(
        listed[0]["refused"]
            .as_str()
            .is_some_and(|why| why.contains("--installation-owner")),
        "{listed}"
    );

    // Her push, pull request and issue: her repository is unknown here, nothing runs.
    let deliveries = [
        ("push", "github/push-new-branch.json"),
        ("pull_request", "github/pull_request-opened.json"),
        ("issues", "github/issues-opened.json"),
    ];
    for (n, (event, fixture)) in deliveries.iter().enumerate() {
        let (status, answer) = deliver_webhook(
            &registering.url,
            "github",
            event,
            &format!("unknown-{n}"),
            &webhook_fixture(fixture),
            APP_SECRET,
        )
        .await;
        assert_eq!(status, 401, "{event}: {answer}");
    }
    assert_eq!(runs(&registering).await, json!([]), "no run started");

    // An admin registers her repository by hand with the App's secret, as the guide says
    // for a repository of the App: her deliveries are still refused, with why, and
    // recorded nowhere; again after a restart.
    let response = reqwest::Client::new()
        .post(format!("{}/api/repos", registering.url))
        .bearer_auth(ADMIN)
        .json(&json!({
            "name": "Codertocat/Hello-World", "forge": "github",
            "clone_url": "https://github.com/Codertocat/Hello-World.git",
            "webhook_secret": APP_SECRET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    for round in ["first", "restarted"] {
        for (n, (event, fixture)) in deliveries.iter().enumerate() {
            let (status, answer) = deliver_webhook(
                &registering.url,
                "github",
                event,
                &format!("hers-{round}-{n}"),
                &webhook_fixture(fixture),
                APP_SECRET,
            )
            .await;
            assert_eq!(status, 403, "{round} {event}: {answer}");
            let said = answer.to_string();
            assert!(
                said.contains("nothing was run") && said.contains("Codertocat"),
                "{said}"
            );
        }
        assert_eq!(
            runs(&registering).await,
            json!([]),
            "{round}: no run started"
        );
        if round == "first" {
            sb.kill9(registering.pid);
            registering = engine(&sb, "registering", &flags).await;
        }
    }
}

// The operator accepts her account after all: a restart with `--installation-owner` naming
// it judges the recorded installation again, accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_refused_then_accepted_is_judged_again_at_the_start() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("installations-rejudged");
    let refusing = engine(&sb, "engine", &[]).await;
    let (status, answer) = deliver_webhook(
        &refusing.url,
        "github",
        "installation",
        "r-1",
        &webhook_fixture("github/installation-created.json"),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = get(&refusing, "/api/installations", Some(ADMIN)).await;
    assert_eq!(listed[0]["accepted"], false, "{listed}");
    sb.kill9(refusing.pid);
    let accepting = engine(&sb, "engine", &["--installation-owner", "Codertocat"]).await;
    let (_, listed) = get(&accepting, "/api/installations", Some(ADMIN)).await;
    assert_eq!(listed[0]["accepted"], true, "{listed}");
    assert!(listed[0].get("refused").is_none(), "{listed}");
}

/// A manual workflow whose one step names the engine's secret DEPLOY and prints a digest
/// of what it got.
const DEPLOY: &str = r#"
def workflow(ctx):
    return Plan("deploy", triggers=[Trigger.manual()], steps=[
        Step.bash("deploy", 'printf %s "$DEPLOY" | sha256sum', secrets=["DEPLOY"]),
    ])
"#;

/// The engine's own secret in the test below.
const OPERATORS_SECRET: &str = "the-operators-deploy-key-1f0c";

// The attack (issue 69): a step naming the engine's own `--secret` received it in any
// registered repository's run — a stranger's included. Now the secret reaches only the
// repositories `--secret-repos` names for it: the named one's step gets it; the other's
// step fails saying the secret is not set for it, and its log never holds the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_secret_reaches_only_the_repositories_named_for_it() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("installations-engine-secret");
    let origin = sb.path("origin");
    support::git_repo(
        &origin,
        &[(".plue/deploy.plue.py", DEPLOY), ("README.md", "hi\n")],
    );
    let secret = format!("DEPLOY={OPERATORS_SECRET}");
    let engine = sb
        .serve_one_runner(
            "engine",
            "data",
            &["--secret", &secret, "--secret-repos", "DEPLOY=acme/*"],
        )
        .await;
    let url = engine.url.as_str();
    let http = client();
    for name in ["acme/app", "mallory/app"] {
        support::register_origin_as(url, &origin, name, "a-webhook-secret-of-the-test").await;
    }
    let named = support::dispatch_retrying_to(&http, url, "acme/app", "deploy", json!({})).await;
    let stranger =
        support::dispatch_retrying_to(&http, url, "mallory/app", "deploy", json!({})).await;

    let run = wait_final(&http, url, named, Duration::from_secs(120)).await;
    assert_eq!(step(&run, "deploy")["status"], "succeeded", "{run}");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(OPERATORS_SECRET));
    let log = support::log_lines(&http, url, named, "deploy")
        .await
        .unwrap();
    let log = serde_json::to_string(&log).unwrap();
    assert!(log.contains(&digest), "the named repository got it: {log}");

    let run = wait_final(&http, url, stranger, Duration::from_secs(120)).await;
    let deploy = step(&run, "deploy");
    assert_eq!(deploy["status"], "failed", "{run}");
    let reason = deploy["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("secret 'DEPLOY' is not set for mallory/app")
            && reason.contains("--secret-repos"),
        "{reason}"
    );
    let log = support::log_lines(&http, url, stranger, "deploy")
        .await
        .unwrap_or_default();
    let log = serde_json::to_string(&log).unwrap();
    assert!(
        !log.contains(&digest) && !log.contains(OPERATORS_SECRET),
        "{log}"
    );
}
