//! Who may do what, route by route (issue 29): every operation of `plue_server::api::openapi()`
//! called as each of anonymous, a runner registration token used as a bearer, a reader, a
//! writer and a maintainer of repository `acme/app`, and the admin — allowed exactly where
//! [`rule`] says, and a route without a rule fails the test, so a new route cannot be
//! forgotten. Repository `acme/other` is private and none of the users holds a role on it:
//! every route of it answers them as if it did not exist.
//!
//! "Allowed" means the request got past the access checks: not 401 or 403, and not a 404,
//! except the "nothing there" 404 named for the route (an artifact, a secret, a member that
//! is not there — answered only after access was granted). Bodies are ones that would
//! succeed, or fail with 400/409/422/501, so what is measured is the access layer. A 500
//! fails the test.
//!
//! Also, against the same world: a step's token (a user holding roles on another
//! repository only) and no token read nothing of a private repository's run — not its run,
//! logs, artifacts, outputs, approvals, nor its line in the runs list; a revoked token gets
//! 401 everywhere; maintainers grant roles up to their own; every change is audited with
//! its user. (Past 600 lines: one table, the world its paths name, and the tests that need
//! that world, kept together so a route's rule and its attacks are read side by side.)

use std::collections::BTreeSet;

use crate::support;

use plue_server::server::RunningEngine;
use plue_store::{EnvironmentSettings, Store};
use serde_json::{json, Value};

const ADMIN: &str = support::ADMIN_TOKEN;
const RUNNER: &str = support::RUNNER_TOKEN;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// The engine's runner registration token, sent as a bearer.
    Runner,
    Reader,
    Writer,
    Maintainer,
    Admin,
}

/// Admins act last: their calls may change what later calls find.
const CALLERS: [Who; 6] = [
    Who::Anonymous,
    Who::Runner,
    Who::Reader,
    Who::Writer,
    Who::Maintainer,
    Who::Admin,
];

/// Who a route is for (on `acme/app`, where reader, writer and maintainer hold their role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Anyone, tokens or not (the OpenAPI document).
    Open,
    /// Anyone with no token or a valid one: a list filtered to what the caller may read.
    Listed,
    /// Any signed-in user.
    SignedIn,
    Reader,
    Writer,
    Maintainer,
    /// The installation admin only.
    Admin,
}

impl Rule {
    fn allows(self, who: Who) -> bool {
        match self {
            Rule::Open => true,
            Rule::Listed => who != Who::Runner,
            Rule::SignedIn | Rule::Reader => {
                matches!(
                    who,
                    Who::Reader | Who::Writer | Who::Maintainer | Who::Admin
                )
            }
            Rule::Writer => matches!(who, Who::Writer | Who::Maintainer | Who::Admin),
            Rule::Maintainer => matches!(who, Who::Maintainer | Who::Admin),
            Rule::Admin => who == Who::Admin,
        }
    }

    /// Whether the rule is a role on the repository the route names.
    fn of_repository(self) -> bool {
        matches!(self, Rule::Reader | Rule::Writer | Rule::Maintainer)
    }
}

/// How one operation is called and who may.
struct Case {
    rule: Rule,
    /// The concrete path: `{run}` is a run of `acme/app`, `{repo}` is `acme/app` (both
    /// swapped for `acme/other`'s to check it stays hidden), `{token}` an API token of user
    /// `outsider`, `{runner_token}` a scoped runner token.
    uri: &'static str,
    body: Option<Value>,
    /// The words of the 404 a caller past the access checks gets when the thing is not
    /// there.
    missing: Option<&'static str>,
}

fn case(rule: Rule, uri: &'static str) -> Case {
    Case {
        rule,
        uri,
        body: None,
        missing: None,
    }
}

impl Case {
    fn body(mut self, body: Value) -> Case {
        self.body = Some(body);
        self
    }

    fn missing(mut self, words: &'static str) -> Case {
        self.missing = Some(words);
        self
    }
}

/// THE table: who may call each operation (method, path as the document spells it).
/// `None`: the route has no rule here yet — the test fails until one is written.
fn rule(method: &str, path: &str) -> Option<Case> {
    use Rule::*;
    let repo = "/api/repos/{owner}/{name}";
    let path = path
        .strip_prefix(repo)
        .map_or(path.to_string(), |rest| format!("{{repo}}{rest}"));
    Some(match (method, path.as_str()) {
        ("get", "/api/openapi.json") => case(Open, "/api/openapi.json"),
        // Runs.
        ("get", "/api/runs") => case(Listed, "/api/runs"),
        ("post", "/api/runs") => {
            case(Admin, "/api/runs").body(json!({"workflow": "/nowhere/ci.plue.py"}))
        }
        ("get", "/api/runs/{id}") => case(Reader, "/api/runs/{run}"),
        ("get", "/api/runs/{id}/record") => case(Reader, "/api/runs/{run}/record"),
        ("post", "/api/runs/{id}/cancel") => case(Writer, "/api/runs/{run}/cancel"),
        ("post", "/api/runs/{id}/rerun") => case(Writer, "/api/runs/{run}/rerun"),
        ("get", "/api/runs/{id}/steps/{step}/logs") => {
            case(Reader, "/api/runs/{run}/steps/build/logs")
        }
        ("post", "/api/runs/{id}/steps/{step}/approve") => {
            case(Writer, "/api/runs/{run}/steps/build/approve").body(json!({}))
        }
        ("post", "/api/runs/{id}/steps/{step}/reject") => {
            case(Writer, "/api/runs/{run}/steps/build/reject").body(json!({}))
        }
        ("get", "/api/runs/{id}/approvals") => case(Reader, "/api/runs/{run}/approvals"),
        ("get", "/api/runs/{id}/proposals") => case(Reader, "/api/runs/{run}/proposals"),
        ("post", "/api/runs/{id}/proposals/{pid}/decision") => {
            case(Writer, "/api/runs/{run}/proposals/1/decision")
                .body(json!({"approve": true}))
                .missing("has no proposal")
        }
        // Provenance: a run's statements for its readers; the keys for anyone.
        ("get", "/api/runs/{id}/provenance") => case(Reader, "/api/runs/{run}/provenance"),
        ("get", "/api/runs/{id}/proposals/{pid}/provenance") => {
            case(Reader, "/api/runs/{run}/proposals/1/provenance")
                .missing("has no provenance statement")
        }
        ("get", "/api/provenance/keys") => case(Open, "/api/provenance/keys"),
        ("get", "/api/runs/{id}/artifacts") => case(Reader, "/api/runs/{run}/artifacts"),
        ("get", "/api/runs/{id}/steps/{step}/artifacts") => {
            case(Reader, "/api/runs/{run}/steps/build/artifacts").missing("has no artifacts")
        }
        ("get", "/api/runs/{id}/steps/{step}/artifacts/{path}") => {
            case(Reader, "/api/runs/{run}/steps/build/artifacts/out.txt")
                .missing("has no artifacts")
        }
        ("get", "/api/runs/{id}/annotations") => case(Reader, "/api/runs/{run}/annotations"),
        ("get", "/api/runs/{id}/id-tokens") => case(Reader, "/api/runs/{run}/id-tokens"),
        ("post", "/api/id-tokens/rotate") => case(Admin, "/api/id-tokens/rotate"),
        ("get", "/api/runs/{id}/steps/{step}/transcript") => {
            case(Reader, "/api/runs/{run}/steps/build/transcript").missing("kept no transcript")
        }
        // Debug sessions: writers open one (here `build` did not fail: 409, past the
        // checks); a session is its creator's alone, so for everyone else one that exists
        // and one that does not are the same 404 (tests/debug_shell.rs plays the creator).
        ("post", "/api/runs/{id}/steps/{step}/debug") => {
            case(Writer, "/api/runs/{run}/steps/build/debug").body(json!({}))
        }
        ("get" | "delete", "/api/debug/{session}") => {
            case(SignedIn, "/api/debug/0123456789abcdef0123456789abcdef")
                .missing("no debug session")
        }
        ("get", "/api/debug/{session}/attach") => case(
            SignedIn,
            "/api/debug/0123456789abcdef0123456789abcdef/attach",
        )
        .missing("no debug session"),
        ("post", "/api/debug/{session}/input") => case(
            SignedIn,
            "/api/debug/0123456789abcdef0123456789abcdef/input",
        )
        .body(json!({"data": "aWQK"}))
        .missing("no debug session"),
        // Runners.
        ("get", "/api/runners") => case(SignedIn, "/api/runners"),
        ("get", "/api/pool") => case(SignedIn, "/api/pool").missing("runs no local pool"),
        // Repositories.
        ("get", "/api/repos") => case(Listed, "/api/repos"),
        ("get", "/api/forges") => case(Listed, "/api/forges"),
        // The GitHub App's installations: the installation admin only.
        ("get", "/api/installations") => case(Admin, "/api/installations"),
        ("post", "/api/repos") => case(Admin, "/api/repos").body(json!({
            "name": "acme/new", "clone_url": "https://forge.example/new.git",
            "forge": "gitea", "webhook_secret": "a-webhook-secret",
        })),
        ("get", "{repo}") => case(Reader, "{repo}"),
        ("patch", "{repo}") => case(Maintainer, "{repo}").body(json!({"public_read": false})),
        // Another repository than the callers': the admin removes it.
        ("delete", "{repo}") => case(Admin, "/api/repos/acme/doomed"),
        ("get", "{repo}/members") => case(Maintainer, "{repo}/members"),
        ("put", "{repo}/members/{user}") => {
            case(Maintainer, "{repo}/members/outsider").body(json!({"role": "reader"}))
        }
        ("delete", "{repo}/members/{user}") => {
            case(Maintainer, "{repo}/members/outsider").missing("holds no role")
        }
        ("get", "{repo}/secrets") => case(Maintainer, "{repo}/secrets"),
        ("put", "{repo}/secrets/{secret}") => {
            case(Maintainer, "{repo}/secrets/TOKEN").body(json!({"value": "v"}))
        }
        ("delete", "{repo}/secrets/{secret}") => {
            case(Maintainer, "{repo}/secrets/TOKEN").missing("no secret")
        }
        ("get", "{repo}/schedules") => case(Reader, "{repo}/schedules"),
        ("get", "{repo}/caches") => case(Reader, "{repo}/caches"),
        ("get", "{repo}/workflows") => case(Reader, "{repo}/workflows"),
        ("post", "{repo}/dispatch") => {
            case(Writer, "{repo}/dispatch").body(json!({"workflow": "ci.plue.py"}))
        }
        ("get", "/api/schedules") => case(SignedIn, "/api/schedules"),
        // Environments.
        ("get", "{repo}/environments") => case(Reader, "{repo}/environments"),
        ("get", "{repo}/environments/{env}") => case(Reader, "{repo}/environments/prod"),
        ("put", "{repo}/environments/{env}") => {
            case(Maintainer, "{repo}/environments/prod").body(json!({"allowed_refs": ["main"]}))
        }
        ("delete", "{repo}/environments/{env}") => {
            case(Maintainer, "{repo}/environments/staging").missing("no environment")
        }
        ("get", "{repo}/environments/{env}/secrets") => {
            case(Reader, "{repo}/environments/prod/secrets")
        }
        ("put", "{repo}/environments/{env}/secrets/{secret}") => {
            case(Maintainer, "{repo}/environments/prod/secrets/KEY").body(json!({"value": "v"}))
        }
        ("delete", "{repo}/environments/{env}/secrets/{secret}") => {
            case(Maintainer, "{repo}/environments/prod/secrets/KEY").missing("no secret")
        }
        // Users, their tokens, groups, the audit trail.
        ("get", "/api/user") => case(SignedIn, "/api/user"),
        ("get", "/api/users") => case(Admin, "/api/users"),
        ("post", "/api/users") => {
            case(Admin, "/api/users").body(json!({"name": "newcomer", "kind": "person"}))
        }
        ("get", "/api/users/{name}") => case(Admin, "/api/users/outsider"),
        ("delete", "/api/users/{name}") => case(Admin, "/api/users/leaver"),
        ("post", "/api/users/{name}/forge-logins") => {
            case(Admin, "/api/users/outsider/forge-logins")
                .body(json!({"forge": "github", "login": "outsider-gh"}))
        }
        ("delete", "/api/users/{name}/forge-logins/{forge}/{login}") => {
            case(Admin, "/api/users/outsider/forge-logins/github/nobody").missing("not linked")
        }
        ("post", "/api/users/{name}/tokens") => {
            case(Admin, "/api/users/outsider/tokens").body(json!({"name": "ci"}))
        }
        ("get", "/api/tokens") => case(SignedIn, "/api/tokens"),
        ("post", "/api/tokens") => case(SignedIn, "/api/tokens").body(json!({"name": "laptop"})),
        // Another user's token: its owner (not among the callers) or an admin.
        ("delete", "/api/tokens/{id}") => case(Admin, "/api/tokens/{token}"),
        ("get", "/api/groups") => case(Admin, "/api/groups"),
        ("post", "/api/groups") => case(Admin, "/api/groups").body(json!({"name": "release"})),
        ("get", "/api/groups/{name}") => case(Admin, "/api/groups/ops"),
        ("delete", "/api/groups/{name}") => case(Admin, "/api/groups/disbanded"),
        ("put", "/api/groups/{name}/members/{user}") => {
            case(Admin, "/api/groups/ops/members/outsider")
        }
        ("delete", "/api/groups/{name}/members/{user}") => {
            case(Admin, "/api/groups/ops/members/outsider").missing("not a member")
        }
        // Admins read it all, maintainers their repositories' part.
        ("get", "/api/audit") => case(Maintainer, "/api/audit"),
        // Runner registration tokens.
        ("get", "/api/runner-tokens") => case(Admin, "/api/runner-tokens"),
        ("post", "/api/runner-tokens") => {
            case(Admin, "/api/runner-tokens").body(json!({"name": "prod-runners"}))
        }
        ("delete", "/api/runner-tokens/{id}") => case(Admin, "/api/runner-tokens/{runner_token}"),
        _ => return None,
    })
}

/// The engine and everything the table's paths name.
struct World {
    engine: RunningEngine,
    http: reqwest::Client,
    store: Store,
    /// Runs of `acme/app` and `acme/other`, and a local run (the admins'), each with a
    /// queued step `build`.
    run: i64,
    other_run: i64,
    local_run: i64,
    reader: String,
    writer: String,
    maintainer: String,
    /// An API token id of user `outsider`.
    outsider_token: i64,
    runner_token: i64,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = support::engine_config(RUNNER, ADMIN, "key-of-the-access-matrix");
    let engine = support::start_in_process(dir.path(), config).await;
    let store = engine.executor.store().clone();
    let app = support::create_repo(&store).await;
    let other = support::create_named_repo(&store, "acme/other").await;
    support::create_named_repo(&store, "acme/doomed").await;
    let (_, _, reader) = support::user_with_token(&store, "reader", &[(app, "reader")]).await;
    let (_, _, writer) = support::user_with_token(&store, "writer", &[(app, "writer")]).await;
    let (_, _, maintainer) =
        support::user_with_token(&store, "maintainer", &[(app, "maintainer")]).await;
    let (_, outsider_token, _) = support::user_with_token(&store, "outsider", &[]).await;
    support::user_with_token(&store, "leaver", &[]).await;
    store.create_group("ops").await.unwrap();
    store.create_group("disbanded").await.unwrap();
    for repo_id in [app, other] {
        for env in ["prod", "staging"] {
            let settings = EnvironmentSettings {
                allowed_refs: vec!["main".into()],
                reviewers: vec![],
                wait_timer_s: 0,
                prevent_self_review: true,
                untrusted_id_tokens: false,
            };
            store
                .put_environment(repo_id, env, &settings)
                .await
                .unwrap();
        }
    }
    let plan = support::plan("ci", vec![support::bash_step("build", "true")]);
    let run = support::start_repo_run(&engine.executor, "acme/app", app, &plan).await;
    let other_run = support::start_repo_run(&engine.executor, "acme/other", other, &plan).await;
    let local_run = support::start_plan_run(&engine.executor, "/w/ci.plue.py", &plan, None).await;
    let http = reqwest::Client::new();
    let created: Value = support::post_json(
        &http,
        &format!("{}/api/runner-tokens", engine.url),
        ADMIN,
        &json!({"name": "to-revoke"}),
    )
    .await;
    World {
        http,
        store,
        run,
        other_run,
        local_run,
        reader,
        writer,
        maintainer,
        outsider_token,
        runner_token: created["id"].as_i64().expect("a runner token id"),
        engine,
        _dir: dir,
    }
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Runner => Some(RUNNER),
            Who::Reader => Some(&self.reader),
            Who::Writer => Some(&self.writer),
            Who::Maintainer => Some(&self.maintainer),
            Who::Admin => Some(ADMIN),
        }
    }

    /// `uri` with its placeholders filled, of `acme/app` or (`other`) of `acme/other`.
    fn concrete(&self, uri: &str, other: bool) -> String {
        let (run, repo) = if other {
            (self.other_run, "/api/repos/acme/other")
        } else {
            (self.run, "/api/repos/acme/app")
        };
        self.fill(uri, run, repo)
    }

    /// `uri` of the local run.
    fn local(&self, uri: &str) -> String {
        self.fill(uri, self.local_run, "/api/repos/acme/app")
    }

    fn fill(&self, uri: &str, run: i64, repo: &str) -> String {
        uri.replace("{run}", &run.to_string())
            .replace("{repo}", repo)
            .replace("{token}", &self.outsider_token.to_string())
            .replace("{runner_token}", &self.runner_token.to_string())
    }

    /// Calls `method uri` with `token` and `body`: the status and the error message (empty
    /// when the body is not an error).
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let url = format!("{}{uri}", self.engine.url);
        let response = support::request(&self.http, method, &url, token, body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // A live log stream never ends: its status is what counts.
        let text = if status == 200 {
            String::new()
        } else {
            response.text().await.unwrap_or_default()
        };
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, error)
    }
}

/// Whether an answer got past the access checks (see the module's doc).
fn passed(status: u16, error: &str, missing: Option<&str>) -> bool {
    match status {
        401 | 403 => false,
        404 => missing.is_some_and(|words| error.contains(words)),
        _ => true,
    }
}

/// Every operation the document lists, as (method, path).
fn operations() -> Vec<(String, String)> {
    let doc = serde_json::to_value(plue_server::api::openapi()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.push((method.clone(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_allows_exactly_the_roles_of_its_rule() {
    let world = world().await;
    let operations = operations();
    let unruled: Vec<String> = operations
        .iter()
        .filter(|(method, path)| rule(method, path).is_none())
        .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(
        unruled.is_empty(),
        "routes without a rule in the access matrix (add them to `rule`): {unruled:#?}"
    );
    assert!(
        operations.len() >= 50,
        "only {} operations",
        operations.len()
    );
    let mut wrong = Vec::new();
    for (method, path) in &operations {
        let case = rule(method, path).unwrap();
        let mut variants = vec![(world.concrete(case.uri, false), false, case.rule)];
        if case.rule.of_repository() && (case.uri.contains("{run}") || case.uri.contains("{repo}"))
        {
            // The same route of a private repository none of them holds a role on.
            variants.push((world.concrete(case.uri, true), true, Rule::Admin));
        }
        if case.uri.contains("{run}") {
            // The same route of a local run: the admins' alone, hidden from the others.
            variants.push((world.local(case.uri), true, Rule::Admin));
        }
        for (uri, other, rule) in variants {
            for who in CALLERS {
                let (status, error) = world
                    .call(method, &uri, world.token(who), case.body.as_ref())
                    .await;
                assert!(
                    status < 500 || status == 501,
                    "{} {uri} as {who:?}: {status} {error}",
                    method.to_uppercase()
                );
                let allowed = passed(status, &error, case.missing);
                if allowed != rule.allows(who) {
                    wrong.push(format!(
                        "{} {uri} as {who:?}: {status} {error:?} (expected {})",
                        method.to_uppercase(),
                        if rule.allows(who) {
                            "allowed"
                        } else {
                            "refused"
                        }
                    ));
                }
                if other && !allowed && !matches!(who, Who::Anonymous | Who::Runner) {
                    // Users learn nothing of a repository they may not read: not even
                    // that it exists (a 403 would say so).
                    assert_eq!(
                        status,
                        404,
                        "{} {uri} as {who:?}: {error}",
                        method.to_uppercase()
                    );
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers against the matrix:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// The attack (issue 29): a step holds a token (or none) and reads another repository's
// runs through the engine's API — its run, step logs, artifacts, outputs, approvals, its
// line in the runs list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_nothing_of_another_repositorys_runs() {
    let world = world().await;
    // A step of `acme/other` acts with a token of a user of that repository only.
    let other = world.repo("acme/other").await;
    let (_, _, step) =
        support::user_with_token(&world.store, "ci-bot", &[(other.id, "maintainer")]).await;
    let run = world.run;
    let reads = [
        format!("/api/runs/{run}"),
        format!("/api/runs/{run}/record"),
        format!("/api/runs/{run}/steps/build/logs"),
        format!("/api/runs/{run}/artifacts"),
        format!("/api/runs/{run}/steps/build/artifacts"),
        format!("/api/runs/{run}/steps/build/artifacts/out.txt"),
        format!("/api/runs/{run}/steps/build/transcript"),
        format!("/api/runs/{run}/approvals"),
        format!("/api/runs/{run}/proposals"),
        "/api/repos/acme/app".to_string(),
        "/api/repos/acme/app/schedules".to_string(),
        "/api/repos/acme/app/caches".to_string(),
        "/api/repos/acme/app/environments".to_string(),
    ];
    for uri in &reads {
        let (status, error) = world.call("get", uri, Some(&step), None).await;
        assert_eq!(status, 404, "GET {uri} with the step's token: {error}");
        assert!(
            !error.contains("build") && !error.contains("ci"),
            "GET {uri}: {error}"
        );
        let (status, _) = world.call("get", uri, None, None).await;
        assert_eq!(status, 401, "GET {uri} without a token");
    }
    // The lists hold none of it.
    for (token, who) in [
        (Some(step.as_str()), "the step's token"),
        (None, "no token"),
    ] {
        for uri in ["/api/runs", "/api/runs?repo=acme/app", "/api/repos"] {
            let response = world.http.get(format!("{}{uri}", world.engine.url));
            let response = match token {
                Some(token) => response.bearer_auth(token),
                None => response,
            };
            let listed: Value = response.send().await.unwrap().json().await.unwrap();
            let text = listed.to_string();
            assert!(
                !text.contains("acme/app")
                    && !listed["runs"]
                        .as_array()
                        .or(listed.as_array())
                        .unwrap()
                        .iter()
                        .any(|r| r["id"] == run),
                "GET {uri} with {who}: {text}"
            );
        }
    }
    // Its own repository's run it reads.
    let uri = format!("/api/runs/{}", world.other_run);
    assert_eq!(world.call("get", &uri, Some(&step), None).await.0, 200);
    // Made public by its maintainer, the repository's runs are read by anyone — and no
    // more than read.
    let (status, _) = world
        .call(
            "patch",
            "/api/repos/acme/app",
            Some(&world.maintainer),
            Some(&json!({"public_read": true})),
        )
        .await;
    assert_eq!(status, 200);
    for uri in &reads {
        let (status, error) = world.call("get", uri, None, None).await;
        assert!(
            passed(status, &error, Some("has no artifacts"))
                || passed(status, &error, Some("kept no transcript")),
            "GET {uri} anonymously, once public: {status} {error}"
        );
    }
    let (status, _) = world
        .call(
            "post",
            &format!("/api/runs/{run}/cancel"),
            Some(&step),
            None,
        )
        .await;
    assert_eq!(status, 403, "reading a public repository is all it opens");
    let listed: Value =
        support::send_json(world.http.get(format!("{}/api/repos", world.engine.url))).await;
    let names: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["acme/app"]), "{listed}");
    assert_eq!(listed[0]["public_read"], true);
}

/// The id of the user `name`.
async fn user_id(store: &plue_store::Store, name: &str) -> i64 {
    store.user_by_name(name).await.unwrap().unwrap().id
}

// The attack (issue 29): a token that was revoked keeps working somewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_gets_401_on_every_route() {
    let world = world().await;
    let app = world.repo("acme/app").await;
    let (_, token_id, token) =
        support::user_with_token(&world.store, "revoked", &[(app.id, "maintainer")]).await;
    assert_eq!(
        world.call("get", "/api/user", Some(&token), None).await.0,
        200
    );
    assert!(world.store.revoke_token(token_id).await.unwrap());
    for (method, path) in operations() {
        let case = rule(&method, &path).expect("a rule (see the matrix test)");
        if case.rule == Rule::Open {
            continue;
        }
        let uri = world.concrete(case.uri, false);
        let (status, error) = world
            .call(&method, &uri, Some(&token), case.body.as_ref())
            .await;
        assert_eq!(status, 401, "{} {uri}: {error}", method.to_uppercase());
    }
}

impl World {
    /// The stored repository `name`.
    async fn repo(&self, name: &str) -> plue_store::RepoRow {
        self.store.repo_by_name(name).await.unwrap().unwrap()
    }

    /// At most 100 audit events, as the store lists them.
    async fn audit_events(&self) -> Vec<plue_store::AuditRow> {
        self.store
            .audit_events(&plue_store::AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// `PUT /api/repos/{repo}/members/{user}` with `role` (`None`: `DELETE`) as `token`,
    /// asserting `status`; the JSON answer.
    async fn member(
        &self,
        repo: &str,
        user: &str,
        token: &str,
        role: Option<&str>,
        status: u16,
    ) -> Value {
        let uri = format!("/api/repos/{repo}/members/{user}");
        match role {
            Some(role) => {
                let body = json!({ "role": role });
                self.expect("put", &uri, token, Some(body), status).await
            }
            None => self.expect("delete", &uri, token, None, status).await,
        }
    }

    /// [`World::member`] of `acme/app` as its maintainer.
    async fn maintain(&self, user: &str, role: Option<&str>, status: u16) -> Value {
        self.member("acme/app", user, &self.maintainer, role, status)
            .await
    }

    /// Registers the repository `name` as the admin (201).
    async fn register(&self, name: &str, clone_url: &str, forge: &str) {
        self.expect(
            "post",
            "/api/repos",
            ADMIN,
            Some(json!({"name": name, "clone_url": clone_url, "forge": forge,
                        "webhook_secret": "a-webhook-secret"})),
            201,
        )
        .await;
    }

    /// `method uri` with `token` and a JSON `body`, asserting the status; the JSON answer.
    async fn expect(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let method_ = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method_, format!("{}{uri}", self.engine.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {uri}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

// Members: a maintainer grants roles up to maintainer — never through a token narrowed
// below it — only to users that exist; the grant is what the user then acts with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainers_grant_and_revoke_roles_up_to_their_own() {
    let world = world().await;
    let members = "/api/repos/acme/app/members";
    let (outsider, _, outsider_token) =
        support::user_with_token(&world.store, "outsider", &[]).await;
    let run = format!("/api/runs/{}", world.run);
    world.expect("get", &run, &outsider_token, None, 404).await;
    let granted = world.maintain("OUTSIDER", Some("writer"), 200).await;
    assert_eq!(granted["user"], "outsider");
    assert_eq!(granted["role"], "writer");
    world.expect("get", &run, &outsider_token, None, 200).await;
    let listed = world
        .expect("get", members, &world.maintainer, None, 200)
        .await;
    let roles: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        roles.contains(&("outsider".into(), "writer".into())),
        "{listed}"
    );
    assert!(
        roles.contains(&("maintainer".into(), "maintainer".into())),
        "{listed}"
    );
    // Maintainer may be granted by a maintainer; a token narrowed to writer grants nothing.
    world.maintain("outsider", Some("maintainer"), 200).await;
    let app = world.repo("acme/app").await;
    let maintainer_id = user_id(&world.store, "maintainer").await;
    let (_, narrowed) =
        support::new_user_token(&world.store, maintainer_id, "narrow", Some("writer"), None).await;
    world
        .member("acme/app", "outsider", &narrowed, Some("reader"), 403)
        .await;
    // Unknown users and roles.
    world.maintain("nobody", Some("reader"), 404).await;
    world.maintain("outsider", Some("admin"), 422).await;
    // Revoked: the user reads nothing again.
    world.maintain("outsider", None, 204).await;
    world.expect("get", &run, &outsider_token, None, 404).await;
    world.maintain("outsider", None, 404).await;
    assert_eq!(world.store.role_of(app.id, outsider).await.unwrap(), None);
}

// Every change through the API is in the audit trail with the user who made it, and runs
// started through it record their triggerer's user id (what `exclude_triggerer` compares).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_audited_with_the_user_and_runs_record_their_triggerer() {
    let world = world().await;
    let writer_id = user_id(&world.store, "writer").await;
    let maintainer_id = user_id(&world.store, "maintainer").await;
    let run = world.run;
    let rerun = world
        .expect(
            "post",
            &format!("/api/runs/{run}/rerun"),
            &world.writer,
            None,
            200,
        )
        .await["run_id"]
        .as_i64()
        .unwrap();
    let trigger = world.store.trigger_of(rerun).await.unwrap().unwrap();
    assert_eq!(
        (trigger.user_id, trigger.name.as_str()),
        (Some(writer_id), "writer")
    );
    world
        .expect(
            "post",
            &format!("/api/runs/{run}/cancel"),
            &world.writer,
            None,
            200,
        )
        .await;
    let repo = "/api/repos/acme/app";
    world
        .expect(
            "patch",
            repo,
            &world.maintainer,
            Some(json!({"public_read": true})),
            200,
        )
        .await;
    world.maintain("outsider", Some("reader"), 200).await;
    world.maintain("outsider", None, 204).await;
    world
        .register("acme/new", "https://forge.example/new.git", "gitea")
        .await;
    world
        .expect("delete", "/api/repos/acme/new", ADMIN, None, 200)
        .await;
    let made = world
        .expect(
            "post",
            "/api/runner-tokens",
            ADMIN,
            Some(json!({"name": "r"})),
            201,
        )
        .await;
    world
        .expect(
            "delete",
            &format!("/api/runner-tokens/{}", made["id"]),
            ADMIN,
            None,
            200,
        )
        .await;
    let events = world.audit_events().await;
    let seen: Vec<(String, Option<i64>, String)> = events
        .iter()
        .rev()
        .map(|e| (e.action.clone(), e.user_id, e.actor.clone()))
        .collect();
    let admin_id = user_id(&world.store, "admin").await;
    for expected in [
        ("run.rerun", Some(writer_id), "writer"),
        ("run.cancel", Some(writer_id), "writer"),
        ("repo.settings", Some(maintainer_id), "maintainer"),
        ("role.grant", Some(maintainer_id), "maintainer"),
        ("role.revoke", Some(maintainer_id), "maintainer"),
        ("repo.create", Some(admin_id), "admin"),
        ("repo.delete", Some(admin_id), "admin"),
        ("runner_token.create", Some(admin_id), "admin"),
        ("runner_token.revoke", Some(admin_id), "admin"),
    ] {
        let expected = (expected.0.to_string(), expected.1, expected.2.to_string());
        assert!(seen.contains(&expected), "{expected:?} in {seen:#?}");
    }
    let rerun_event = events.iter().find(|e| e.action == "run.rerun").unwrap();
    assert_eq!(rerun_event.run_id, Some(rerun));
    assert!(
        rerun_event.detail.contains(&format!("\"rerun_of\":{run}")),
        "{}",
        rerun_event.detail
    );
    // Secret changes name the secret, never its value.
    let secret = format!("{repo}/secrets/TOKEN");
    world
        .expect(
            "put",
            &secret,
            &world.maintainer,
            Some(json!({"value": "hunter2"})),
            204,
        )
        .await;
    world
        .expect("delete", &secret, &world.maintainer, None, 204)
        .await;
    let after = world.audit_events().await;
    for action in ["secret.put", "secret.delete"] {
        let event = after.iter().find(|e| e.action == action).expect(action);
        assert_eq!(event.user_id, Some(maintainer_id));
        assert!(event.detail.contains("TOKEN"), "{}", event.detail);
    }
    assert!(after.iter().all(|e| !e.detail.contains("hunter2")));
}

// The attack (issue 29): on SQLite a deleted repository's id was handed to the next one
// registered (`INTEGER PRIMARY KEY` reuses the largest id once its row is gone). The new
// repository's maintainers then read the old one's audit trail (its members, its secrets'
// names), and it took over the old one's git mirror (`mirrors/{id}.git`, with every commit
// of the deleted private repository for a dispatch by SHA to run). Ids are never reused
// now, and a repository's mirror goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_repository_never_takes_a_deleted_ones_id_nor_its_audit_trail() {
    let world = world().await;
    let doomed = world.repo("acme/doomed").await;
    let repo = "/api/repos/acme/doomed";
    world
        .expect(
            "put",
            &format!("{repo}/secrets/DOOMED_KEY"),
            ADMIN,
            Some(json!({"value": "v"})),
            204,
        )
        .await;
    world
        .member("acme/doomed", "outsider", ADMIN, Some("writer"), 200)
        .await;
    world.expect("delete", repo, ADMIN, None, 200).await;
    world
        .register("acme/fresh", "https://forge.example/fresh.git", "gitea")
        .await;
    let fresh = world.repo("acme/fresh").await;
    assert_ne!(
        fresh.id, doomed.id,
        "the deleted repository's id was reused"
    );
    world
        .member("acme/fresh", "maintainer", ADMIN, Some("maintainer"), 200)
        .await;
    for uri in ["/api/audit?repo=acme/fresh", "/api/audit"] {
        let events = world.expect("get", uri, &world.maintainer, None, 200).await;
        let text = events.to_string();
        assert!(
            !text.contains("DOOMED_KEY") && !text.contains("outsider"),
            "GET {uri}: the deleted repository's events: {text}"
        );
    }
    // The admin's trail names each event's own repository.
    let events = world.expect("get", "/api/audit", ADMIN, None, 200).await;
    for event in events.as_array().unwrap() {
        if event["detail"].to_string().contains("DOOMED_KEY") {
            assert_ne!(event["repository"], "acme/fresh", "{event}");
        }
    }
}

// The same attack through the mirror: a repository registered under an id whose git mirror
// was left behind (a deleted repository's, from an engine that kept them) ran its
// dispatches by SHA on the deleted repository's commits, there without a fetch. A new
// repository starts with no mirror, and a deleted one's goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_never_reads_a_mirror_left_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let mirrors = dir.path().join("mirrors");
    let mut config = support::admin_config(RUNNER, ADMIN);
    config.mirrors_dir = mirrors.clone();
    let engine = support::start_in_process_with_evaluator(dir.path(), config).await;
    let left = mirrors.join("1.git");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("deleted-repository-commits"), "x").unwrap();
    let http = reqwest::Client::new();
    let created: Value = support::post_json(
        &http,
        &format!("{}/api/repos", engine.url),
        ADMIN,
        &json!({"name": "acme/fresh", "clone_url": "file:///nowhere/fresh.git",
                "forge": "gitea", "webhook_secret": "a-webhook-secret"}),
    )
    .await;
    assert_eq!(created["name"], "acme/fresh", "{created}");
    let store = engine.executor.store();
    let fresh = store.repo_by_name("acme/fresh").await.unwrap().unwrap();
    assert_eq!(fresh.id, 1);
    assert!(
        !left.join("deleted-repository-commits").exists(),
        "the new repository kept the mirror left under its id"
    );
    let mirror = mirrors.join(format!("{}.git", fresh.id));
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join("its-commits"), "x").unwrap();
    let deleted = http
        .delete(format!("{}/api/repos/acme/fresh", engine.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(
        !mirror.join("its-commits").exists(),
        "a deleted repository's mirror stayed"
    );
}

// The attack (issue 29): a private repository cloned over https with its credentials in
// the URL (`https://x-access-token:…@forge/…`) showed that URL to every reader — and to
// anyone once public — in `GET /api/repos`, `GET /api/repos/{owner}/{name}` and the
// dashboard's repository pages. They show it without the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_urls_credentials_are_never_shown() {
    let world = world().await;
    for (name, url) in [
        (
            "acme/creds",
            "https://x-access-token:ghs_s3cr3t@forge.example/acme/creds.git",
        ),
        (
            "acme/bare",
            "https://ghs_s3cr3t@forge.example/acme/bare.git",
        ),
    ] {
        world.register(name, url, "github").await;
        world
            .member(name, "reader", ADMIN, Some("reader"), 200)
            .await;
        let shown = world
            .expect(
                "get",
                &format!("/api/repos/{name}"),
                &world.reader,
                None,
                200,
            )
            .await;
        assert_eq!(
            shown["clone_url"],
            format!("https://***@forge.example/{name}.git"),
            "{shown}"
        );
    }
    for token in [&world.reader, &world.maintainer, ADMIN] {
        let listed = world.expect("get", "/api/repos", token, None, 200).await;
        assert!(!listed.to_string().contains("s3cr3t"), "{listed}");
    }
    // What the engine clones from keeps them.
    let stored = world.repo("acme/creds").await;
    assert!(stored.clone_url.contains("ghs_s3cr3t"));
}

// The attack (issue 29): a reader of `acme/app` (and no token at all) asks for the private
// `acme/other` by every spelling of its paths — HEAD, trailing and double slashes, the
// name's case, a percent-encoded slash, `?repo=` filters, the audit trail's `?repo=`, a
// step that does not exist — and for a run id past the last one. Each answer is the one
// a thing that does not exist gets: same status, same words but for the name asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_looks_like_a_missing_one_however_it_is_asked_for() {
    let world = world().await;
    let (hidden, missing) = (world.other_run, world.other_run + 1000);
    let reader = Some(world.reader.as_str());
    let pairs = [
        (
            "get",
            format!("/api/runs/{hidden}"),
            format!("/api/runs/{missing}"),
        ),
        (
            "head",
            format!("/api/runs/{hidden}"),
            format!("/api/runs/{missing}"),
        ),
        (
            "get",
            format!("/api/runs/{hidden}/"),
            format!("/api/runs/{missing}/"),
        ),
        (
            "get",
            format!("//api/runs/{hidden}"),
            format!("//api/runs/{missing}"),
        ),
        (
            "get",
            format!("/api/runs/{hidden}/steps/nothing/logs"),
            format!("/api/runs/{missing}/steps/nothing/logs"),
        ),
        (
            "post",
            format!("/api/runs/{hidden}/rerun"),
            format!("/api/runs/{missing}/rerun"),
        ),
        (
            "post",
            format!("/api/runs/{hidden}/steps/build/approve"),
            format!("/api/runs/{missing}/steps/build/approve"),
        ),
        (
            "get",
            "/api/repos/acme/other".into(),
            "/api/repos/acme/nothing".into(),
        ),
        (
            "get",
            "/api/repos/ACME/OTHER".into(),
            "/api/repos/ACME/NOTHING".into(),
        ),
        (
            "get",
            "/api/repos/acme/other/".into(),
            "/api/repos/acme/nothing/".into(),
        ),
        (
            "get",
            "/api/repos/acme%2Fother".into(),
            "/api/repos/acme%2Fnothing".into(),
        ),
        (
            "patch",
            "/api/repos/acme/other".into(),
            "/api/repos/acme/nothing".into(),
        ),
        (
            "put",
            "/api/repos/acme/other/members/reader".into(),
            "/api/repos/acme/nothing/members/reader".into(),
        ),
        (
            "get",
            "/api/audit?repo=acme/other".into(),
            "/api/audit?repo=acme/nothing".into(),
        ),
        (
            "get",
            "/api/runs?repo=acme/other".into(),
            "/api/runs?repo=acme/nothing".into(),
        ),
    ];
    let body = json!({"public_read": true});
    for token in [reader, None, Some(world.maintainer.as_str())] {
        for (method, hidden_uri, missing_uri) in &pairs {
            let body = matches!(*method, "patch" | "put" | "post").then_some(&body);
            let (status, error) = world.call(method, hidden_uri, token, body).await;
            let (expected, expected_error) = world.call(method, missing_uri, token, body).await;
            let who = if token.is_some() {
                "a user"
            } else {
                "no token"
            };
            assert_eq!(
                status, expected,
                "{method} {hidden_uri} as {who}: {status} {error} against {expected} {expected_error}"
            );
            let normalize = |text: &str| {
                text.replace(&missing.to_string(), "ID")
                    .replace(&hidden.to_string(), "ID")
                    .replace("other", "NAME")
                    .replace("OTHER", "NAME")
                    .replace("nothing", "NAME")
                    .replace("NOTHING", "NAME")
            };
            assert_eq!(
                normalize(&error),
                normalize(&expected_error),
                "{method} {hidden_uri} as {who}"
            );
        }
    }
    // Lists say nothing either.
    for uri in ["/api/runs?repo=acme/other", "/api/repos", "/api/schedules"] {
        let (status, _) = world.call("get", uri, reader, None).await;
        assert_eq!(status, 200);
        let listed = world.expect("get", uri, &world.reader, None, 200).await;
        assert!(
            !listed.to_string().contains("acme/other"),
            "{uri}: {listed}"
        );
    }
}
