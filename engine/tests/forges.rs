//! End-to-end tests of the forge surface with the real `plue serve`: a git repository made
//! here with `git`, registered through the API; deliveries built from the real GitHub and
//! Gitea payloads in `tests/fixtures/webhooks/` (copied byte for byte from public
//! repositories; `tests/fixtures/webhooks/README.md` names each source and commit) with
//! their repository, refs and commits pointed at that repository, and signed; runs
//! executed by local runners; commit statuses received by a fake forge that checks
//! method, path, auth header and body.
//!
//! Why one file past ~600 lines: the forge surface end to end on one repository-and-engine
//! fixture, a test per delivery scenario.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

use crate::support::{
    client, free_port, get_json, git_sh, serial, wait_final, wait_for, wait_succeeded,
    webhook_fixture, ForgeRepo, Sandbox,
};

const REPO: &str = "octo/hello";
const WEBHOOK_SECRET: &str = "webhook-secret-of-octo-hello";
const FORGE_TOKEN: &str = "forge-token-for-statuses";
const ZERO: &str = "0000000000000000000000000000000000000000";

const CI: &str = r#"
def workflow(ctx):
    return Plan(
        name="CI",
        triggers=[Trigger.on_push(branch="main"), Trigger.on_pull_request(branches=["main"])],
        steps=[Step.bash("test", """
echo "event=%s branch=%s pr=%s"
echo "files=%s"
cat README.md
if [ -n "${DEPLOY_TOKEN:-}" ]; then echo "has-secret token=$DEPLOY_TOKEN"; else echo "no-secret withheld=${PLUE_SECRETS_WITHHELD:-}"; fi
""" % (ctx.event, ctx.branch, ctx.pr.number if ctx.pr else "-", ",".join(ctx.changed_files)),
            secrets=["DEPLOY_TOKEN"])],
    )
"#;

const RELEASE: &str = r#"
def workflow(ctx):
    return Plan(name="Release", triggers=[Trigger.on_push(tags=["v*"])],
                steps=[Step.bash("release", "echo releasing " + ctx.ref)])
"#;

const DOCS: &str = r#"
def workflow(ctx):
    return Plan(name="Docs", triggers=[Trigger.on_push(branches=["**"], paths=["docs/**"])],
                steps=[Step.bash("docs", "ls docs")])
"#;

const DEPLOY: &str = r#"
def workflow(ctx):
    return Plan(name="Deploy",
                triggers=[Trigger.manual(inputs={"target": "staging", "version": None})],
                steps=[Step.bash("deploy", "echo deploying %s to %s" % (ctx.inputs.get("version"), ctx.inputs.get("target")))])
"#;

const NIGHTLY: &str = r#"
def workflow(ctx):
    return Plan(name="Nightly", triggers=[Trigger.on_schedule("0 3 * * *")],
                steps=[Step.bash("nightly", "echo nightly")])
"#;

/// The repository under test: `main` with five workflow files.
struct Origin {
    dir: std::path::PathBuf,
}

impl Origin {
    fn create(sb: &Sandbox) -> Origin {
        let dir = sb.path("origin");
        let files = [
            (".plue/ci.plue.py", CI),
            (".plue/release.plue.py", RELEASE),
            (".plue/docs.plue.py", DOCS),
            (".plue/deploy.plue.py", DEPLOY),
            (".plue/nightly.plue.py", NIGHTLY),
            ("README.md", "hello from main\n"),
        ];
        support::git_repo(&dir, &files);
        Origin { dir }
    }

    fn head(&self) -> String {
        git_sh(&self.dir, "git rev-parse HEAD")
    }

    /// Commits `files` on `branch` (created from main when new); returns the commit.
    fn commit(&self, branch: &str, files: &[(&str, &str)]) -> String {
        git_sh(
            &self.dir,
            &format!("git checkout -q {branch} 2>/dev/null || git checkout -q -b {branch} main"),
        );
        for (path, text) in files {
            let path = self.dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git_sh(
            &self.dir,
            "git add -A && git commit -qm change && git rev-parse HEAD",
        )
    }
}

/// What the fake forge received: method, path, Authorization header, JSON body.
type Received = Arc<Mutex<Vec<(String, String, String, Value)>>>;

/// A forge API that records status posts and fails the first `fail_first` of them with
/// 500 (to exercise retries).
async fn fake_forge(fail_first: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let failures = Arc::new(Mutex::new(fail_first));
    let state = (received.clone(), failures);
    let app = axum::Router::new()
        .fallback(
            |State((received, failures)): State<(Received, Arc<Mutex<usize>>)>,
             method: axum::http::Method,
             uri: Uri,
             headers: HeaderMap,
             body: String| async move {
                // The engine asks whose its token is (`GET /user`) before it trusts a push
                // or pull request with secrets: not a status; the forge names an account
                // no delivery here comes from (a forge that cannot say makes every push
                // and pull request run like a fork's: `tests/summon.rs`).
                if method == axum::http::Method::GET {
                    if uri.path().ends_with("/user") {
                        return (
                            StatusCode::OK,
                            json!({"login": "plue-statuses"}).to_string(),
                        );
                    }
                    return (StatusCode::NOT_FOUND, "{}".to_string());
                }
                let mut left = failures.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return (StatusCode::INTERNAL_SERVER_ERROR, "try again".to_string());
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                received.lock().unwrap().push((
                    method.to_string(),
                    uri.path().to_string(),
                    auth,
                    body,
                ));
                (StatusCode::CREATED, "{}".to_string())
            },
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

struct Delivery {
    forge: &'static str,
    event: &'static str,
    id: String,
    body: Vec<u8>,
}

impl Delivery {
    fn new(forge: &'static str, event: &'static str, id: &str, body: &Value) -> Delivery {
        Delivery {
            forge,
            event,
            id: id.to_string(),
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    fn signature(&self, secret: &str) -> String {
        plue_forge::signature::sign(&self.body, secret)
    }

    async fn send_signed_with(&self, engine: &str, secret: &str) -> (StatusCode, Value) {
        let signature = self.signature(secret);
        let mut request = reqwest::Client::new()
            .post(format!("{engine}/webhooks/{}", self.forge))
            .header("content-type", "application/json")
            .body(self.body.clone());
        request = match self.forge {
            "github" => request
                .header("X-GitHub-Event", self.event)
                .header("X-GitHub-Delivery", &self.id)
                .header("X-Hub-Signature-256", format!("sha256={signature}"))
                .header("User-Agent", "GitHub-Hookshot/test"),
            _ => request
                .header("X-Gitea-Event", self.event)
                .header("X-Gitea-Delivery", &self.id)
                .header("X-Gitea-Signature", signature.clone())
                .header("X-Hub-Signature-256", format!("sha256={signature}"))
                .header("X-GitHub-Event", self.event),
        };
        let response = request.send().await.expect("delivery");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            StatusCode::from_u16(status.as_u16()).unwrap(),
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn send(&self, engine: &str) -> (StatusCode, Value) {
        self.send_signed_with(engine, WEBHOOK_SECRET).await
    }

    /// Sends it to the engine at `url`, which must start one run: its id and the run once
    /// final.
    async fn one_run(&self, url: &str) -> (i64, Value) {
        let (status, answer) = self.send(url).await;
        assert_eq!(status, 200, "{answer}");
        let runs = support::run_ids(&answer);
        assert_eq!(runs.len(), 1, "{answer}");
        let run = wait_final(&client(), url, runs[0], Duration::from_secs(60)).await;
        (runs[0], run)
    }

    /// Sends it to the engine at `url`, which must answer 200 and start no run.
    async fn no_run(&self, url: &str) {
        let (status, answer) = self.send(url).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    }
}

/// A GitHub `push` delivery `id` of [`github_push`]`(git_ref, before, after, files)`.
fn push_delivery(id: &str, git_ref: &str, before: &str, after: &str, files: &[&str]) -> Delivery {
    Delivery::new(
        "github",
        "push",
        id,
        &github_push(git_ref, before, after, files),
    )
}

/// A GitHub `pull_request` delivery `id` of [`github_pull_request`] with these arguments.
fn pr_delivery(id: &str, action: &str, number: u64, head: &str, sha: &str, base: &str) -> Delivery {
    let body = github_pull_request(action, number, head, sha, base);
    Delivery::new("github", "pull_request", id, &body)
}

/// A GitHub push of `after` to `git_ref`, from the fixture.
fn github_push(git_ref: &str, before: &str, after: &str, files: &[&str]) -> Value {
    let mut body = webhook_fixture("github/push-new-branch.json");
    body["ref"] = json!(git_ref);
    body["before"] = json!(before);
    body["after"] = json!(after);
    body["created"] = json!(before == ZERO);
    body["repository"]["full_name"] = json!(REPO);
    body["repository"]["default_branch"] = json!("main");
    body["commits"][0]["id"] = json!(after);
    body["commits"][0]["added"] = json!(files);
    body["head_commit"]["id"] = json!(after);
    body
}

/// A GitHub pull request event from the fixture: `head` branch at `head_sha` into main.
fn github_pull_request(
    action: &str,
    number: u64,
    head: &str,
    head_sha: &str,
    base_sha: &str,
) -> Value {
    let mut body = webhook_fixture("github/pull_request-opened.json");
    body["action"] = json!(action);
    body["number"] = json!(number);
    body["pull_request"]["number"] = json!(number);
    body["repository"]["full_name"] = json!(REPO);
    body["pull_request"]["base"]["repo"]["full_name"] = json!(REPO);
    body["pull_request"]["head"]["repo"]["full_name"] = json!(REPO);
    body["pull_request"]["base"]["ref"] = json!("main");
    body["pull_request"]["base"]["sha"] = json!(base_sha);
    body["pull_request"]["head"]["ref"] = json!(head);
    body["pull_request"]["head"]["sha"] = json!(head_sha);
    body
}

async fn register(engine: &str, name: &str, forge: &str, clone_url: &str, api_url: &str) {
    let body = ForgeRepo {
        name,
        forge,
        clone_url,
        api_url,
        webhook_secret: WEBHOOK_SECRET,
        api_token: FORGE_TOKEN,
    }
    .register(engine)
    .await;
    assert!(
        !body.contains(WEBHOOK_SECRET) && !body.contains(FORGE_TOKEN),
        "{body}"
    );
}

async fn step_log(engine: &str, run_id: i64, step: &str) -> String {
    let lines = support::log_lines(&client(), engine, run_id, step)
        .await
        .expect("logs");
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn runs_of(engine: &str, repo: &str) -> Vec<Value> {
    get_json(
        &client(),
        &format!("{engine}/api/runs?repo={repo}&limit=1000"),
    )
    .await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the forge received the final status of every run in `runs` and returns
/// the states it got per sha, in order.
async fn statuses_for(received: &Received, sha: &str, count: usize) -> Vec<Value> {
    wait_for(
        Duration::from_secs(30),
        &format!("{count} statuses for {sha}"),
        || async {
            let got: Vec<Value> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, path, _, _)| path.ends_with(sha))
                .map(|(_, _, _, body)| body.clone())
                .collect();
            (got.len() >= count).then_some(got)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deliveries_start_the_runs_a_user_expects_and_report_statuses() {
    let _serial = serial().await;
    let sb = Sandbox::new("forges-github");
    let origin = Origin::create(&sb);
    let (forge_url, received) = fake_forge(1).await;
    let engine = sb
        .serve_engine(&["--runners", "2", "--public-url", "https://plue.example.com"])
        .await;
    let url = engine.url.as_str();
    register(
        url,
        REPO,
        "github",
        origin.dir.to_str().unwrap(),
        &forge_url,
    )
    .await;
    support::put_repo_secret(url, REPO, "DEPLOY_TOKEN", "s3cr3t-deploy-value").await;
    let secrets = get_json(&client(), &format!("{url}/api/repos/{REPO}/secrets")).await;
    assert_eq!(secrets[0]["name"], "DEPLOY_TOKEN");
    assert!(!secrets.to_string().contains("s3cr3t"));

    // The schedule of the default branch is read at registration, with its next fire time.
    let schedules = wait_for(Duration::from_secs(20), "the nightly schedule", || async {
        let s = get_json(&client(), &format!("{url}/api/repos/{REPO}/schedules")).await;
        (s.as_array().is_some_and(|a| !a.is_empty())).then_some(s)
    })
    .await;
    assert_eq!(schedules[0]["workflow_path"], ".plue/nightly.plue.py");
    assert_eq!(schedules[0]["cron"], "0 3 * * *");
    assert!(schedules[0]["next_fire_time"]
        .as_str()
        .unwrap()
        .ends_with("T03:00:00Z"));

    // A ping is answered; a push to main starts CI only (docs has a path filter, release
    // wants tags, deploy is manual, nightly is a schedule).
    let ping = Delivery::new("github", "ping", "ping-1", &{
        let mut p = webhook_fixture("github/ping-repo.json");
        p["repository"]["full_name"] = json!(REPO);
        p
    });
    let (status, answer) = ping.send(url).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new());

    let main_sha = origin.head();
    let push = push_delivery(
        "push-main-1",
        "refs/heads/main",
        ZERO,
        &main_sha,
        &["README.md"],
    );
    let (status, answer) = push.send(url).await;
    assert_eq!(status, 200, "{answer}");
    let ci_runs = support::run_ids(&answer);
    assert_eq!(ci_runs.len(), 1, "{answer}");
    let run = wait_succeeded(&client(), url, ci_runs[0], Duration::from_secs(60)).await;
    assert_eq!(run["workflow"], "CI");
    assert_eq!(run["repository"], REPO);
    assert_eq!(run["sha"], main_sha.as_str());
    let log = step_log(url, ci_runs[0], "test").await;
    assert!(log.contains("event=push branch=main pr=-"), "{log}");
    assert!(log.contains("hello from main"), "{log}");
    assert!(
        log.contains("has-secret token=***"),
        "the secret reached the step, masked: {log}"
    );
    assert!(!log.contains("s3cr3t"), "{log}");

    // The same delivery again: 200, the same run, nothing new.
    let (status, again) = push.send(url).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(support::run_ids(&again), ci_runs);
    // A wrong signature, an unknown repository, a missing signature.
    let (status, _) = push.send_signed_with(url, "not-the-secret").await;
    assert_eq!(status, 401);
    let mut stranger = github_push("refs/heads/main", ZERO, &main_sha, &[]);
    stranger["repository"]["full_name"] = json!("nobody/else");
    // An unknown repository answers like a wrong signature: nobody without a secret can
    // learn which repositories are registered.
    let (status, _) = Delivery::new("github", "push", "stranger", &stranger)
        .send(url)
        .await;
    assert_eq!(status, 401);
    let unsigned = reqwest::Client::new()
        .post(format!("{url}/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "unsigned")
        .body(push.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    // A feature branch touching docs/: the docs workflow only.
    let feature_sha = origin.commit("feature/docs", &[("docs/guide.md", "guide\n")]);
    let (_, run) = push_delivery(
        "push-feature-1",
        "refs/heads/feature/docs",
        ZERO,
        &feature_sha,
        &["docs/guide.md"],
    )
    .one_run(url)
    .await;
    assert_eq!(
        (run["workflow"].as_str(), run["status"].as_str()),
        (Some("Docs"), Some("succeeded")),
        "{run}"
    );
    // A change outside docs/ on that branch: nothing.
    let other_sha = origin.commit("feature/docs", &[("src/lib.txt", "code\n")]);
    push_delivery(
        "push-feature-2",
        "refs/heads/feature/docs",
        &feature_sha,
        &other_sha,
        &["src/lib.txt"],
    )
    .no_run(url)
    .await;

    // A tag starts the release; its deletion starts nothing.
    git_sh(&origin.dir, "git tag v1.0 main");
    let (release, run) = push_delivery("push-tag", "refs/tags/v1.0", ZERO, &main_sha, &[])
        .one_run(url)
        .await;
    assert_eq!(run["workflow"], "Release");
    assert!(step_log(url, release, "release")
        .await
        .contains("releasing refs/tags/v1.0"));
    let mut deletion = webhook_fixture("github/push-delete-tag.json");
    deletion["ref"] = json!("refs/tags/v1.0");
    deletion["before"] = json!(main_sha);
    deletion["repository"]["full_name"] = json!(REPO);
    Delivery::new("github", "push", "delete-tag", &deletion)
        .no_run(url)
        .await;

    // A pull request from a branch of the repository: CI, with secrets, its changed files.
    let pr_sha = origin.commit("fix", &[("README.md", "hello from the fix\n")]);
    let (pr_runs, run) = pr_delivery("pr-opened", "opened", 7, "fix", &pr_sha, &main_sha)
        .one_run(url)
        .await;
    assert_eq!(run["event"], "pull_request");
    assert_eq!(run["status"], "succeeded", "{run}");
    let log = step_log(url, pr_runs, "test").await;
    assert!(log.contains("event=pull_request branch=fix pr=7"), "{log}");
    assert!(log.contains("files=README.md"), "{log}");
    assert!(log.contains("hello from the fix"), "{log}");
    assert!(log.contains("has-secret"), "{log}");
    // Closing it starts nothing.
    pr_delivery("pr-closed", "closed", 7, "fix", &pr_sha, &main_sha)
        .no_run(url)
        .await;

    // A pull request from a fork: the commit comes from the fork; no secrets.
    let fork = sb.path("fork");
    git_sh(
        sb.path("").as_path(),
        &format!(
            "git clone -q -b main {} {}",
            origin.dir.display(),
            fork.display()
        ),
    );
    std::fs::write(fork.join("README.md"), "hello from a fork\n").unwrap();
    let fork_sha = git_sh(&fork, "git commit -qam fork && git rev-parse HEAD");
    let mut forked = github_pull_request("opened", 8, "main", &fork_sha, &main_sha);
    forked["pull_request"]["head"]["repo"]["full_name"] = json!("mallory/hello");
    forked["pull_request"]["head"]["repo"]["clone_url"] = json!(fork.to_str().unwrap());
    let (fork_runs, run) = Delivery::new("github", "pull_request", "pr-fork", &forked)
        .one_run(url)
        .await;
    assert_eq!(run["secrets_allowed"], false);
    let log = step_log(url, fork_runs, "test").await;
    assert!(log.contains("hello from a fork"), "{log}");
    assert!(log.contains("no-secret withheld=DEPLOY_TOKEN"), "{log}");

    // A workflow file that does not evaluate: a failed run with the evaluator's message.
    let broken_sha = origin.commit(
        "broken",
        &[(".plue/bad.plue.py", "def workflow(:\n    pass\n")],
    );
    let (_, answer) = push_delivery("push-broken", "refs/heads/broken", ZERO, &broken_sha, &[])
        .send(url)
        .await;
    let broken_runs = support::run_ids(&answer);
    assert_eq!(
        broken_runs.len(),
        1,
        "only the broken file makes a run: {answer}"
    );
    let run = get_json(&client(), &format!("{url}/api/runs/{}", broken_runs[0])).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["workflow_path"], ".plue/bad.plue.py");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .starts_with(".plue/bad.plue.py:1:"),
        "{run}"
    );

    // Manual dispatch, from the CLI and the API, with inputs checked.
    let text = sb.plue_ok(&[
        "trigger",
        REPO,
        "deploy",
        "--input",
        "version=1.2",
        "--server",
        url,
    ]);
    let deploy_run: i64 = text
        .trim()
        .strip_prefix("run ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // The run's page, to open: `run N started: URL/runs/N`.
    assert!(
        text.trim()
            .ends_with(&format!("{}/runs/{deploy_run}", url.trim_end_matches('/'))),
        "{text}"
    );
    wait_final(&client(), url, deploy_run, Duration::from_secs(60)).await;
    assert!(step_log(url, deploy_run, "deploy")
        .await
        .contains("deploying 1.2 to staging"));
    for (body, code, message) in [
        (
            json!({"workflow": "deploy", "inputs": {"version": "1", "colour": "red"}}),
            409,
            "unknown input 'colour'",
        ),
        (
            json!({"workflow": "deploy"}),
            409,
            "input 'version' is required",
        ),
        (
            json!({"workflow": "ci", "inputs": {}}),
            409,
            "no manual trigger",
        ),
        (json!({"workflow": "nope"}), 404, "no workflow 'nope'"),
        (
            json!({"workflow": "deploy", "ref": "no-such-branch"}),
            404,
            "no-such-branch",
        ),
        (
            json!({"workflow": "deploy", "ref": "main..HEAD"}),
            400,
            "'main..HEAD' is not a valid branch, tag or commit name",
        ),
    ] {
        let response = client()
            .post(format!("{url}/api/repos/{REPO}/dispatch"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, code, "{body}: {text}");
        assert!(text.contains(message), "{body}: {text}");
    }
    let no_token = reqwest::Client::new()
        .post(format!("{url}/api/repos/{REPO}/dispatch"))
        .json(&json!({"workflow": "deploy", "inputs": {"version": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);

    // Every run reported pending, then its result, to the forge — the first post failed
    // with 500 and was retried.
    for (sha, expected) in [
        (main_sha.as_str(), "success"),
        (pr_sha.as_str(), "success"),
        (fork_sha.as_str(), "success"),
        (broken_sha.as_str(), "error"),
    ] {
        let count = if expected == "error" { 1 } else { 2 };
        let mut got = statuses_for(&received, sha, count).await;
        if count == 2 {
            // The CI run's own statuses: other runs at the same commit (the tag's release)
            // may be reported in between, since the first post is retried after a delay.
            got = wait_for(Duration::from_secs(30), "the CI run's statuses", || async {
                let ci: Vec<Value> = statuses_for(&received, sha, count)
                    .await
                    .into_iter()
                    .filter(|b| b["context"] == "plue/CI")
                    .collect();
                (ci.len() >= 2).then_some(ci)
            })
            .await;
        }
        let states: Vec<&str> = got.iter().map(|b| b["state"].as_str().unwrap()).collect();
        if count == 2 {
            assert_eq!(states[..2], ["pending", expected], "{sha}: {got:?}");
        } else {
            assert_eq!(states, [expected], "{sha}: {got:?}");
        }
    }
    let all = received.lock().unwrap().clone();
    for (method, path, auth, body) in &all {
        assert_eq!(method, "POST");
        assert!(path.starts_with("/repos/octo/hello/statuses/"), "{path}");
        assert_eq!(auth, &format!("Bearer {FORGE_TOKEN}"));
        assert!(body["target_url"]
            .as_str()
            .unwrap()
            .starts_with("https://plue.example.com/runs/"));
        assert!(body["context"].as_str().unwrap().starts_with("plue/"));
        assert!(body["description"].is_string());
    }
    let first = get_json(&client(), &format!("{url}/api/runs/{}", ci_runs[0])).await;
    assert!(
        first["commit_statuses"][0]["attempts"].as_i64().unwrap() >= 1,
        "{first}"
    );

    // Exactly the runs above, none twice.
    let runs = runs_of(url, REPO).await;
    assert_eq!(runs.len(), 7, "{runs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_deliveries_work_the_same_way() {
    let _serial = serial().await;
    let sb = Sandbox::new("forges-gitea");
    let origin = Origin::create(&sb);
    let (forge_url, received) = fake_forge(0).await;
    let engine = sb.serve_engine(&["--runners", "1"]).await;
    let url = engine.url.as_str();
    register(
        url,
        REPO,
        "gitea",
        &format!("file://{}", origin.dir.display()),
        &format!("{forge_url}/api/v1"),
    )
    .await;

    let main_sha = origin.head();
    let mut push = webhook_fixture("gitea/push-multi-commit.json");
    push["ref"] = json!("refs/heads/main");
    push["before"] = json!(ZERO);
    push["after"] = json!(main_sha);
    push["repository"]["full_name"] = json!(REPO);
    let delivery = Delivery::new("gitea", "push", "gitea-push-1", &push);
    let (status, answer) = delivery.send(url).await;
    assert_eq!(status, 200, "{answer}");
    let runs = support::run_ids(&answer);
    assert_eq!(runs.len(), 1, "{answer}");
    let run = wait_final(&client(), url, runs[0], Duration::from_secs(60)).await;
    assert_eq!(
        run["status"], "failed",
        "DEPLOY_TOKEN is set nowhere: {run}"
    );
    let test_step = support::step(&run, "test");
    assert_eq!(test_step["reason"], "secret 'DEPLOY_TOKEN' is not set");
    let (_, again) = delivery.send(url).await;
    assert_eq!(again["duplicate"], true);

    // Gitea's synchronized pull request, signed with X-Gitea-Signature.
    let pr_sha = origin.commit("fix", &[("README.md", "fixed\n")]);
    let mut pr = webhook_fixture("gitea/pull_request-synchronized.json");
    pr["repository"]["full_name"] = json!(REPO);
    pr["pull_request"]["base"]["ref"] = json!("main");
    pr["pull_request"]["base"]["sha"] = json!(main_sha);
    pr["pull_request"]["head"]["ref"] = json!("fix");
    pr["pull_request"]["head"]["sha"] = json!(pr_sha);
    let (_, run) = Delivery::new("gitea", "pull_request", "gitea-pr-1", &pr)
        .one_run(url)
        .await;
    assert_eq!(run["event"], "pull_request");
    assert_eq!(run["secrets_allowed"], true, "same repo_id on both sides");

    // Deletes start nothing.
    let mut delete = webhook_fixture("gitea/delete-branch.json");
    delete["repository"]["full_name"] = json!(REPO);
    Delivery::new("gitea", "delete", "gitea-delete", &delete)
        .no_run(url)
        .await;

    // Statuses in Gitea's dialect: `token` auth, same path shape under /api/v1.
    let got = statuses_for(&received, &main_sha, 2).await;
    assert_eq!(got[0]["state"], "pending");
    assert_eq!(got[1]["state"], "failure");
    let all = received.lock().unwrap().clone();
    assert!(all.iter().all(|(method, path, auth, _)| method == "POST"
        && path.starts_with("/api/v1/repos/octo/hello/statuses/")
        && auth == &format!("token {FORGE_TOKEN}")));
    assert_eq!(runs_of(url, REPO).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_deliveries_never_get_a_5xx() {
    let _serial = serial().await;
    let sb = Sandbox::new("forges-fuzz");
    let origin = Origin::create(&sb);
    let engine = sb.serve_engine(&["--runners", "0"]).await;
    let url = engine.url.clone();
    register(
        &url,
        REPO,
        "github",
        origin.dir.to_str().unwrap(),
        "http://127.0.0.1:9",
    )
    .await;
    let http = reqwest::Client::new();
    // The forges' exact bytes, unknown fields and all, signed as they come.
    for (name, forge) in [
        ("Codertocat/Hello-World", "github"),
        ("gogits/hello-world", "gitea"),
    ] {
        let clone_url = origin.dir.to_str().unwrap();
        register(&url, name, forge, clone_url, "http://127.0.0.1:9").await;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    for (forge, event, file, code) in [
        ("github", "push", "github/push-delete-tag.json", 200),
        ("gitea", "delete", "gitea/delete-tag.json", 200),
        ("gitea", "delete", "gitea/delete-branch.json", 200),
        // The commit of the fixture is not in the repository: nothing to fetch.
        ("github", "push", "github/push-new-branch.json", 422),
    ] {
        let raw = std::fs::read(root.join(file)).unwrap();
        let delivery = Delivery {
            forge,
            event,
            id: format!("raw-{file}"),
            body: raw,
        };
        let (status, answer) = delivery.send(&url).await;
        assert_eq!(status.as_u16(), code, "{file}: {answer}");
        if code == 200 {
            assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{file}");
        }
    }
    let fixtures: Vec<Vec<u8>> = [
        "github/push-new-branch.json",
        "github/pull_request-opened.json",
        "gitea/push-multi-commit.json",
        "gitea/pull_request-synchronized.json",
        "github/ping-repo.json",
    ]
    .iter()
    .map(|p| {
        let mut v = webhook_fixture(p);
        v["repository"]["full_name"] = json!(REPO);
        serde_json::to_vec(&v).unwrap()
    })
    .collect();
    // A deterministic generator: the same cases on every run.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..400u32 {
        let forge = if case % 2 == 0 { "github" } else { "gitea" };
        let base = &fixtures[(next() % fixtures.len() as u64) as usize];
        let mut body = base.clone();
        match next() % 7 {
            0 => body.truncate((next() % body.len() as u64) as usize),
            1 => {
                for _ in 0..8 {
                    let at = (next() % body.len() as u64) as usize;
                    body[at] = (next() % 256) as u8;
                }
            }
            2 => body = (0..(next() % 300)).map(|_| (next() % 256) as u8).collect(),
            3 => {
                // Valid JSON of the wrong shapes, signed correctly.
                let shapes = [
                    json!({"repository": {"full_name": REPO}}),
                    json!({"repository": {"full_name": REPO}, "ref": 5, "after": []}),
                    json!({"repository": {"full_name": REPO}, "action": "opened", "pull_request": {"head": 1}}),
                    json!({"repository": {"full_name": REPO}, "ref": "refs/heads/main", "after": "--upload-pack=touch /tmp/x"}),
                    json!({"repository": {"full_name": REPO}, "ref": "refs/heads/main", "after": "zz"}),
                    json!({"repository": {"full_name": 7}}),
                    json!([1, 2, 3]),
                    json!(null),
                ];
                body =
                    serde_json::to_vec(&shapes[(next() % shapes.len() as u64) as usize]).unwrap();
            }
            _ => {}
        }
        let signature = plue_forge::signature::sign(&body, WEBHOOK_SECRET);
        let event = [
            "push",
            "pull_request",
            "ping",
            "delete",
            "issues",
            "",
            "\u{1}",
        ][(next() % 7) as usize];
        let mut request = http.post(format!("{url}/webhooks/{forge}")).body(body);
        let delivery = format!("fuzz-{case}");
        let headers: [(&str, String); 3] = match forge {
            "github" => [
                ("X-GitHub-Event", event.to_string()),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", format!("sha256={signature}")),
            ],
            _ => [
                ("X-Gitea-Event", event.to_string()),
                ("X-Gitea-Delivery", delivery),
                ("X-Gitea-Signature", signature),
            ],
        };
        let drop = next() % 4; // sometimes leave a header out
        for (i, (name, value)) in headers.iter().enumerate() {
            if drop as usize != i || next() % 2 == 0 {
                if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
                    request = request.header(*name, value);
                }
            }
        }
        let response = request.send().await.expect("the server answers");
        let code = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert!(code < 500, "case {case}: {code} {text}");
        if code == 422 {
            // Only a well-signed event naming a commit the repository does not have.
            assert!(text.contains("cannot process"), "case {case}: {text}");
        }
        if code >= 400 {
            let error: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("case {case}: not JSON: {text}"));
            assert!(error["error"].is_string(), "case {case}: {text}");
        }
        *answered.entry(code).or_default() += 1;
    }
    // Over the limit: 413 from the declared length, before any of the body is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = url.strip_prefix("http://").unwrap();
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: {address}\r\nX-GitHub-Event: push\r\n\
             X-GitHub-Delivery: huge\r\nContent-Length: {}\r\n\r\n",
            plue_server::webhooks::MAX_BODY_BYTES + 1
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("an answer before the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // A body that grows past the limit without declaring its length (chunked).
    let chunks =
        futures::stream::iter((0..6).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024])));
    let streamed = http
        .post(format!("{url}/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "huge-chunked")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(response) = streamed {
        assert_eq!(response.status(), 413);
    }
    assert!(
        answered.get(&400).copied().unwrap_or(0) > 50,
        "{answered:?}"
    );
    assert!(
        answered.get(&401).copied().unwrap_or(0) > 10,
        "{answered:?}"
    );
    // (A fresh connection: the server closed the one the oversized body came on.)
    let health = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "the server still serves: {answered:?}"
    );
    assert!(!std::path::Path::new("/tmp/x").exists());
}

/// Two engines on one PostgreSQL, both looking for due schedules every second: each tick
/// of the nightly schedule (moved into the past by the test, ten times) starts exactly
/// one run, and the next fire time moves on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_tick_with_two_engines_on_one_postgres() {
    let _serial = serial().await;
    let why = "two engines on one PostgreSQL need a PostgreSQL";
    let Some((postgres, db)) = support::postgres_database(why) else {
        return;
    };
    let sb = Sandbox::new("forges-schedules");
    let origin = Origin::create(&sb);
    // An engine `name` without runners on the shared database, its data directory its own.
    let serve = |name: &'static str| {
        let data = sb.path(&format!("data-{name}"));
        let sb = &sb;
        let db = db.clone();
        async move {
            let data = data.to_str().unwrap();
            let args = ["--database-url", &db, "--runners", "0", "--data-dir", data];
            sb.serve(&format!("engine-{name}"), free_port(), &args)
                .await
        }
    };
    let engine_a = serve("a").await;
    let engine_b = serve("b").await;
    register(
        &engine_a.url,
        REPO,
        "github",
        origin.dir.to_str().unwrap(),
        "http://127.0.0.1:9",
    )
    .await;
    let schedules_url = format!("{}/api/repos/{REPO}/schedules", engine_b.url);
    wait_for(
        Duration::from_secs(20),
        "the schedule, seen by the other engine",
        || async {
            let s = get_json(&client(), &schedules_url).await;
            (s.as_array().is_some_and(|a| a.len() == 1)).then_some(())
        },
    )
    .await;
    const TICKS: usize = 10;
    for tick in 1..=TICKS {
        postgres
            .psql(&db, "UPDATE schedules SET next_fire_at = (extract(epoch from now()) * 1000)::bigint - 1000")
            .expect("psql");
        wait_for(Duration::from_secs(20), &format!("tick {tick}"), || async {
            let runs = runs_of(&engine_a.url, REPO).await;
            (runs.len() >= tick).then_some(())
        })
        .await;
    }
    // Both engines had time to look again: still one run per tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = runs_of(&engine_b.url, REPO).await;
    assert_eq!(runs.len(), TICKS, "{runs:#?}");
    assert!(runs
        .iter()
        .all(|r| r["event"] == "schedule" && r["workflow"] == "Nightly"));
    let schedules = get_json(&client(), &schedules_url).await;
    let next = schedules[0]["next_fire_at"].as_i64().unwrap();
    assert!(
        next > support::now_ms(),
        "the next fire time moved on: {schedules}"
    );
    assert!(schedules[0]["last_fired_at"].as_i64().is_some());
}
