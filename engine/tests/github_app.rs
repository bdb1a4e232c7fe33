//! Plue as a GitHub App, end to end with the real `plue serve` (issue 50): the fake forge
//! of `testkit::forge` in App-only mode (it verifies the App's JWTs, hands out installation
//! tokens that expire after a few seconds and hold only what was asked, and refuses
//! personal tokens everywhere), the example `examples/agents/issue-to-pr.plue.py` with its
//! scripted Claude, and a repository registered without any token.
//!
//! What is proven: an issue comment summons the agent, whose change is pushed, opened as a
//! pull request and answered on the issue — all with installation tokens, each narrowed to
//! its use (a read-only one for the mirror and the checkout); the engine knows it is the
//! App's bot (`GET /api/forges`), so its own push runs without secrets and its own comment
//! summons nothing, while a person's push gets them; no installation token is anywhere a
//! step, a reader or an operator could find it (the agent's hunt through its environment,
//! `/proc` and files, the model's requests, the database, the run's logs and artifacts, the
//! engine's and runners' logs). And each refusal says why: a key file that is unreadable
//! or not an RSA key stops `plue serve` (and fails `--check-config`); an App not installed
//! on the repository, or a token request the forge refuses, fails the delivery with the
//! forge's reason, never a token.

use crate::support;
use std::path::Path;
use std::time::Duration;

use crate::support::issue_to_pr::{assert_the_hunt_found_nothing, claude, seed};
use crate::support::{
    client, deliver_webhook, free_port, run_ids, wait_for, webhook_fixture, Engine, Sandbox,
    LLM_KEY,
};
use serde_json::{json, Value};
use testkit::claude::FakeClaude;
use testkit::forge::app::{AppConfig, APP_KEY_PEM, EC_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

const SECRET: &str = "webhook-secret-of-the-github-app-test";
/// The repository the real fixtures name.
const REPO: &str = "Codertocat/Hello-World";
const BOT: &str = "plue-test-app[bot]";
/// The forge's personal token, which the engine is never given.
const PERSONAL: &str = "personal-token-the-engine-never-has";
/// How long the fake's installation tokens live: several are used up in one run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(8);

/// A workflow on every push whose step reads its checkout: which pushes get secrets.
const CI: &str = r#"
def workflow(ctx):
    return Plan(name="CI", triggers=[Trigger.on_push()], steps=[
        Step.bash("test", "test -f examples/agents/demo/greet.sh && echo checked-out"),
    ])
"#;

struct World {
    sb: Sandbox,
    forge: FakeForge,
    claude: FakeClaude,
    engine: Engine,
    /// What every installation token starts with.
    prefix: String,
}

impl World {
    /// The forge in App mode (`prepare` may script it further), the engine as the App, the
    /// repository registered without a token.
    async fn new(name: &str, prepare: impl FnOnce(&FakeForge)) -> World {
        let sb = Sandbox::new(name);
        let forge = FakeForge::start(Flavor::GitHub, PERSONAL).unwrap();
        let seeded = sb.path("seed");
        seed(&seeded);
        std::fs::create_dir_all(seeded.join(".plue")).unwrap();
        std::fs::write(seeded.join(".plue/ci.plue.py"), CI).unwrap();
        forge.create_repo_from(REPO, &seeded).unwrap();
        let issue = forge.create_issue(
            REPO,
            "greet.sh cannot shout",
            "Please add --shout.",
            "Codertocat",
        );
        assert_eq!(issue, 1);
        forge.set_permission("Codertocat", "admin");
        let app = AppConfig::test(TOKEN_LIFETIME);
        // What every installation token starts with: what the agent hunts for.
        let prefix = app.token_prefix.clone();
        forge.enable_app(app);
        prepare(&forge);
        let key = sb.write_private("app-key.pem", APP_KEY_PEM);
        let claude = claude(&prefix, None);
        let data = sb.path("data");
        let secret = format!("ANTHROPIC_API_KEY={LLM_KEY}");
        let app_api = forge.api_url();
        let engine = sb
            .serve_with_env(
                "engine",
                free_port(),
                &[
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--runners",
                    "2",
                    "--heartbeat-ms",
                    "200",
                    "--secret",
                    &secret,
                    // The model's key reaches the one repository's agent (issue 69).
                    "--secret-repos",
                    "ANTHROPIC_API_KEY=Codertocat/Hello-World",
                    "--public-url",
                    "https://plue.example.com",
                    "--github-app-id",
                    "4242",
                    "--github-app-key-file",
                    key.to_str().unwrap(),
                    "--github-app-api-url",
                    &app_api,
                ],
                &[("ANTHROPIC_BASE_URL", claude.url())],
            )
            .await;
        let response = client()
            .post(format!("{}/api/repos", engine.url))
            .json(&json!({
                "name": REPO,
                "clone_url": forge.clone_url(REPO),
                "forge": "github",
                "webhook_secret": SECRET,
                "api_url": forge.api_url(),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        World {
            sb,
            forge,
            claude,
            engine,
            prefix,
        }
    }

    async fn deliver(&self, event: &str, id: &str, payload: &Value) -> (u16, Value) {
        deliver_webhook(&self.engine.url, "github", event, id, payload, SECRET).await
    }

    /// The fixture's comment by `login`, saying `/plue fix`.
    async fn fix_comment(&self, id: &str, login: &str) -> Value {
        let mut payload = webhook_fixture("github/issue_comment-created.json");
        payload["comment"]["body"] = json!("/plue fix");
        payload["comment"]["user"]["login"] = json!(login);
        payload["sender"]["login"] = json!(login);
        payload["repository"]["default_branch"] = json!("main");
        let (status, answer) = self.deliver("issue_comment", id, &payload).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// A push of `after` to `git_ref` by `pusher`.
    async fn push(&self, id: &str, pusher: &str, git_ref: &str, after: &str) -> (u16, Value) {
        let mut push = webhook_fixture("github/push-new-branch.json");
        push["repository"]["full_name"] = json!(REPO);
        push["repository"]["default_branch"] = json!("main");
        push["ref"] = json!(git_ref);
        push["after"] = json!(after);
        push["pusher"]["name"] = json!(pusher);
        push["sender"]["login"] = json!(pusher);
        self.deliver("push", id, &push).await
    }

    async fn succeeded(&self, run: i64) -> Value {
        self.sb
            .wait_succeeded(&client(), &self.engine.url, run, Duration::from_secs(180))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_work_reaches_github_with_installation_tokens_only() {
    let _serial = support::serial().await;
    let world = World::new("github-app", |_| {}).await;
    let runs = run_ids(&world.fix_comment("delivery-1", "Codertocat").await);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = runs[0];
    world.succeeded(run).await;
    let ended = format!("<!-- plue:run:{run}:ended -->");
    wait_for(Duration::from_secs(60), "the end answer", || async {
        world
            .forge
            .comments(REPO)
            .iter()
            .any(|c| c.body.contains(&ended))
            .then_some(())
    })
    .await;

    // The agent's change was pushed and opened, and the issue answered, by the App's bot.
    let pulls = world.forge.pulls(REPO);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pull = &pulls[0];
    assert_eq!(pull.author, BOT);
    assert!(pull.body.contains("Fixes #1"), "{}", pull.body);
    assert_eq!(
        world.forge.branch_sha(REPO, &pull.head).as_deref(),
        Some(pull.head_sha.as_str())
    );
    let comments = world.forge.comments(REPO);
    assert!(comments.len() >= 3, "{comments:?}");
    assert!(comments.iter().all(|c| c.author == BOT), "{comments:?}");
    assert!(
        world
            .forge
            .statuses(REPO)
            .iter()
            .any(|s| s.sha == pull.head_sha && s.state == "success"),
        "{:?}",
        world.forge.statuses(REPO)
    );

    // Every request was the App's (its JWT) or an installation token's; each token was
    // narrowed to one repository and a use, a read-only one among them.
    let tokens = world.forge.installation_tokens();
    assert!(tokens.len() >= 3, "{tokens:?}");
    for token in &tokens {
        assert_eq!(
            token.repositories.iter().collect::<Vec<_>>(),
            ["Hello-World"]
        );
        assert!(
            !token.permissions.contains_key("administration"),
            "{token:?}"
        );
    }
    assert!(tokens
        .iter()
        .any(
            |t| t.permissions.get("contents").map(String::as_str) == Some("read")
                && t.permissions.values().all(|level| level == "read")
        ));
    assert!(tokens
        .iter()
        .any(|t| t.permissions.get("contents").map(String::as_str) == Some("write")));
    for request in world.forge.requests() {
        let auth = request.header("authorization").unwrap_or_default();
        assert!(
            !auth.contains(PERSONAL),
            "{} {}",
            request.method,
            request.path
        );
    }

    // The engine knows it is the App's bot: its own push gets no secrets, its own comment
    // summons nothing; a person's push gets them (the control).
    let listed = support::get_json(&client(), &format!("{}/api/forges", world.engine.url)).await;
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["repository"] == REPO)
        .cloned()
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["identity"], "known", "{entry}");
    assert_eq!(entry["login"], BOT, "{entry}");
    let (status, own) = world
        .push(
            "push-1",
            BOT,
            &format!("refs/heads/{}", pull.head),
            &pull.head_sha,
        )
        .await;
    assert_eq!(status, 200, "{own}");
    let main = world.forge.branch_sha(REPO, "main").unwrap();
    let (status, person) = world
        .push("push-2", "Codertocat", "refs/heads/main", &main)
        .await;
    assert_eq!(status, 200, "{person}");
    for (answer, allowed) in [(&own, false), (&person, true)] {
        let runs = run_ids(answer);
        assert_eq!(runs.len(), 1, "{answer}");
        // The checkout with the claim's read-only token worked.
        let view = world.succeeded(runs[0]).await;
        assert_eq!(view["secrets_allowed"], allowed, "{view}");
    }
    let by_the_bot = world.fix_comment("delivery-2", BOT).await;
    assert!(run_ids(&by_the_bot).is_empty(), "{by_the_bot}");

    // No installation token anywhere: the agent's hunt found none, the model saw none,
    // and no file of the sandbox (database, mirrors, artifacts, logs) holds one.
    let requests = world.claude.requests();
    assert_the_hunt_found_nothing(&requests);
    let tokens = world.forge.installation_tokens();
    for request in &requests {
        let body = request.body.to_string();
        assert!(tokens.iter().all(|t| !body.contains(&t.token)));
    }
    let found = files_holding(
        world.sb.path(""),
        &tokens.iter().map(|t| t.token.clone()).collect::<Vec<_>>(),
    );
    assert!(found.is_empty(), "installation tokens in {found:?}");
}

/// The files below `root` holding any of `needles`.
fn files_holding(root: std::path::PathBuf, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes);
                if needles.iter().any(|n| text.contains(n.as_str())) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// `plue serve` (and `--check-config`) with the App's key file `key`.
fn serve_with_key(sb: &Sandbox, key: &Path, check: bool) -> std::process::Output {
    let mut args = vec![
        "serve",
        "--github-app-id",
        "4242",
        "--github-app-key-file",
        key.to_str().unwrap(),
    ];
    if check {
        args.push("--check-config");
    }
    sb.plue(&args).output().unwrap()
}

#[test]
fn a_key_that_is_unreadable_or_not_rsa_stops_the_engine() {
    let sb = Sandbox::new("github-app-keys");
    let good = sb.write_private("good.pem", APP_KEY_PEM);
    let checked = serve_with_key(&sb, &good, true);
    assert!(checked.status.success(), "{}", support::printed(&checked));
    assert!(
        support::stdout(&checked).contains("GitHub App 4242"),
        "{}",
        support::printed(&checked)
    );
    let ec = sb.write_private("ec.pem", EC_KEY_PEM);
    // Another user of the host could read a key left with the default mode: refused, as
    // the runner's token file is.
    let readable = sb.write("readable.pem", APP_KEY_PEM);
    std::fs::set_permissions(
        &readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    for (key, says) in [
        (readable, "is readable by other users"),
        (
            sb.path("missing.pem"),
            "cannot read the GitHub App's private key file",
        ),
        (ec, "not an RSA private key"),
    ] {
        for check in [true, false] {
            let refused = serve_with_key(&sb, &key, check);
            assert!(!refused.status.success(), "{}", support::printed(&refused));
            let stderr = support::stderr(&refused);
            assert!(stderr.contains(says), "{stderr}");
            assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
        }
    }
    // One without the other is a usage error.
    let alone = sb
        .plue(&["serve", "--github-app-id", "4242"])
        .output()
        .unwrap();
    assert!(!alone.status.success());
    assert!(
        support::stderr(&alone).contains("--github-app-key-file"),
        "{}",
        support::stderr(&alone)
    );
}

/// A person's push to main when the forge refuses the App's reading of the repository:
/// the delivery fails with the forge's reason and starts nothing; no token is shown.
async fn a_refused_app_fails_the_delivery(name: &str, prepare: fn(&FakeForge), says: &str) {
    let _serial = support::serial().await;
    let world = World::new(name, prepare).await;
    let main = world.forge.branch_sha(REPO, "main").unwrap();
    let (status, answer) = world
        .push("push-1", "Codertocat", "refs/heads/main", &main)
        .await;
    assert_ne!(status, 200, "{answer}");
    let text = answer.to_string();
    assert!(text.contains(says), "{text}");
    assert!(!text.contains(&world.prefix), "{text}");
    // The App itself is known all the same (its JWT, not an installation's token).
    let listed = support::get_json(&client(), &format!("{}/api/forges", world.engine.url)).await;
    assert!(listed.to_string().contains(BOT), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_not_installed_on_the_repository_is_a_refusal_that_says_so() {
    a_refused_app_fails_the_delivery(
        "github-app-uninstalled",
        |forge| forge.uninstall_app(REPO),
        "not installed on Codertocat/Hello-World",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_request_is_a_refusal_that_says_so() {
    a_refused_app_fails_the_delivery(
        "github-app-refused",
        |forge| forge.refuse_installation_tokens(403),
        "refused the App an installation token",
    )
    .await;
}

/// A manual workflow whose step says whether it got the repository's `DEPLOY_TOKEN`.
const DEPLOY: &str = r#"
def workflow(ctx):
    return Plan(name="Deploy", triggers=[Trigger.manual()], steps=[
        Step.bash("deploy", 'if [ -n "${DEPLOY_TOKEN:-}" ]; then echo deploy-has-it; else echo deploy-has-none; fi', secrets=["DEPLOY_TOKEN"]),
    ])
"#;

// Issue 69: after the name Codertocat/Hello-World moved to a new owner, a push was refused
// (409) but a dispatch right after used the installation token cached before the takeover,
// skipped the repository-id check and ran the new owner's workflow with the old
// repository's secret; after a restart the same dispatch was a 500. Every start the engine
// makes without a delivery — a dispatch, a re-run — now asks the forge whether the name is
// still the repository registered, and refuses with 409 and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_changed_hands_starts_nothing_through_a_cached_token() {
    let _serial = support::serial().await;
    let world = World::new("github-app-takeover", |forge| {
        forge
            .commit_files(REPO, "main", "main", &[(".plue/deploy.plue.py", DEPLOY)])
            .unwrap();
    })
    .await;
    let url = &world.engine.url;
    support::put_repo_secret(url, REPO, "DEPLOY_TOKEN", "deploy-token-of-the-old-owner").await;
    let dispatch = || async {
        let response = client()
            .post(format!("{url}/api/repos/{REPO}/dispatch"))
            .json(&json!({"workflow": "Deploy", "ref": "main"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    // The registered repository's own dispatch: bound to its forge id, tokens cached.
    let (status, created) = dispatch().await;
    assert_eq!(status, 201, "{created}");
    let first = created["run_id"].as_i64().unwrap();
    world.succeeded(first).await;

    // The name moves to another repository; git still serves it (a public repository).
    world.forge.give_name_to(REPO, 4_040_404);
    let main = world.forge.branch_sha(REPO, "main").unwrap();
    let mut push = webhook_fixture("github/push-new-branch.json");
    push["repository"]["full_name"] = json!(REPO);
    push["repository"]["id"] = json!(4_040_404);
    push["after"] = json!(main);
    let (status, answer) = world.deliver("push", "taken-push", &push).await;
    assert_eq!(status, 409, "{answer}");

    let (status, refused) = dispatch().await;
    assert_eq!(status, 409, "{refused}");
    let said = refused.to_string();
    assert!(
        said.contains("4040404") && said.contains("belongs to another repository"),
        "{said}"
    );
    assert!(!said.contains(&world.prefix), "{said}");
    let rerun = client()
        .post(format!("{url}/api/runs/{first}/rerun"))
        .send()
        .await
        .unwrap();
    assert_eq!(rerun.status(), 409);
    let said = rerun.text().await.unwrap();
    assert!(said.contains("belongs to another repository"), "{said}");
    let runs = support::get_json(&client(), &format!("{url}/api/runs")).await;
    let ids: Vec<i64> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [first], "nothing new started: {runs}");
}
