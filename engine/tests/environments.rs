//! Environments, played by an attacker: an in-process engine with repository `acme/app`,
//! its environment `prod` (allowed on `main` only, reviewed by alice, with the secret
//! `DEPLOY_KEY`), users of each role, and a runner that takes what it is given through
//! the real runner protocol. Runs are created as the registry creates them for a push or
//! a pull request: the plan is the pushed branch's own copy of the workflow file, so the
//! attacker controls all of it; only the engine's records (branch, fork) and the
//! environment's settings decide.
//!
//! Longer than most test files on purpose: every test shares the one harness (engine,
//! repository, environment, users, runner) defined here, and each is one attack or one
//! surface (API, CLI, page) of the same feature.
//!
//! Why one file past ~600 lines: one attacker's walk through one fixture (a repository, its
//! environment, users of every role, a scripted runner); the role table reads in one place.

use std::time::Duration;

use crate::support;

use evaluator::plan::{Plan, Step};
use plue_store::Triggerer;
use plue_types::protocol as wire;
use plue_types::status::StepStatus;
use serde_json::{json, Value};

const REGISTRATION: &str = "registration-token-of-the-environment-tests";
const ADMIN: &str = "admin-token-of-the-environment-tests";
const KEY: &str = "a vault key long enough for the environment tests";
const DEPLOY_KEY: &str = "d3pl0y-k3y-of-prod";

/// The engine with `acme/app` and the runner (its session token) the attacker drives.
type Harness = support::RepoEngine<String>;

/// A user and its API token.
struct Person {
    id: i64,
    token: String,
}

impl Harness {
    /// The engine with `acme/app`, its environment `prod` (main only, reviewer alice) and
    /// prod's secret `DEPLOY_KEY`, set through the API as an admin, and a runner.
    async fn new() -> Harness {
        Harness::start(false).await
    }

    /// [`Harness::new`], with an evaluator for repositories' workflow files when
    /// `evaluating`.
    async fn start(evaluating: bool) -> Harness {
        let config = support::engine_config(REGISTRATION, ADMIN, KEY);
        let h = support::RepoEngine::launch("environments", config, evaluating).await;
        let runner =
            support::register_runner(&h.http, &h.engine.url, REGISTRATION, "attacker-runner").await;
        let h = h.with_runner(runner);
        h.set_prod(json!({"allowed_refs": ["main"], "reviewers": ["alice"]}))
            .await;
        let key = Some(json!({"value": DEPLOY_KEY}));
        let path = "/api/repos/acme/app/environments/prod/secrets/DEPLOY_KEY";
        h.call_ok(ADMIN, "PUT", path, key, 204).await;
        h
    }

    /// Sets prod's `settings` as an admin.
    async fn set_prod(&self, settings: Value) {
        self.set_environment("prod", settings).await;
    }

    /// Sets environment `name`'s `settings` as the admin (200).
    async fn set_environment(&self, name: &str, settings: Value) {
        let path = format!("/api/repos/acme/app/environments/{name}");
        self.call_ok(ADMIN, "PUT", &path, Some(settings), 200).await;
    }

    /// A run of [`deploy`]`(environment)` pushed to `branch`.
    async fn push_deploy(&self, environment: Option<&str>, branch: &str) -> i64 {
        let plan = deploy(environment);
        support::start_push_run(&self.engine.executor, self.repo_id, &plan, branch).await
    }

    /// `PUT` prod's `settings` as `token`: status and body.
    async fn put_prod(&self, token: &str, settings: Value) -> (u16, Value) {
        let path = "/api/repos/acme/app/environments/prod";
        self.call(token, "PUT", path, Some(settings)).await
    }

    /// `PUT` prod's secret `DEPLOY_KEY` (as `value`) as `token`: status and body.
    async fn put_prod_key(&self, token: &str, value: &str) -> (u16, Value) {
        let path = "/api/repos/acme/app/environments/prod/secrets/DEPLOY_KEY";
        self.call(token, "PUT", path, Some(json!({ "value": value })))
            .await
    }

    /// Completes the attempt `attempt_id` of run `run` with `outcome`, as a runner would.
    async fn complete(&self, attempt_id: i64, run: i64, outcome: wire::Outcome) {
        let report = plue_core::executor::Report {
            outcome,
            exit_code: None,
            reason: None,
            outputs: Default::default(),
        };
        let executor = &self.engine.executor;
        executor
            .complete(attempt_id, run, None, &report)
            .await
            .unwrap();
    }

    /// A run of the deploy step under prod, pushed to `main` by `triggerer`.
    async fn deploy_pushed_by(&self, triggerer: Triggerer) -> i64 {
        let run = self.push_deploy(Some("prod"), "main").await;
        self.store().record_trigger(run, &triggerer).await.unwrap();
        run
    }

    /// A user `name` holding `role` on acme/app (none: no role), with a token.
    async fn person(&self, name: &str, role: Option<&str>) -> Person {
        let roles: Vec<(i64, &str)> = role.map(|r| (self.repo_id, r)).into_iter().collect();
        let (id, _, token) = support::user_with_token(self.store(), name, &roles).await;
        Person { id, token }
    }

    /// Decides step `step` of run `run` as `token`; the status and body.
    async fn decide(&self, token: &str, run: i64, step: &str, verb: &str) -> (u16, Value) {
        self.call(
            token,
            "POST",
            &format!("/api/runs/{run}/steps/{step}/{verb}"),
            Some(json!({"comment": "checked"})),
        )
        .await
    }

    /// What the runner is handed now, if anything (it waits briefly).
    async fn claim(&self) -> Option<wire::Assignment> {
        let response: wire::PollResponse = support::post_json(
            &self.http,
            &format!("{}{}", self.engine.runner_url, wire::POLL),
            &self.runner,
            &json!({"wait_ms": 300}),
        )
        .await;
        response.assignment
    }

    /// The step row `step` of run `run`.
    async fn step(&self, run: i64, step: &str) -> plue_store::StepRunRow {
        self.store().step_run(run, step).await.unwrap().unwrap()
    }
}

/// The triggerer `name` (a user's id, a forge login when given).
fn triggerer(name: &str, user_id: Option<i64>, forge_login: Option<&str>) -> Triggerer {
    Triggerer {
        name: name.into(),
        user_id,
        forge_login: forge_login.map(str::to_owned),
    }
}

/// The pushed copy of the deploy workflow: `deploy` naming `secrets=["DEPLOY_KEY"]`, under
/// `environment` when given, with no `Step.approval` anywhere.
fn deploy(environment: Option<&str>) -> Plan {
    let mut step: Step = support::bash_step("deploy", "./deploy.sh");
    step.secrets = vec!["DEPLOY_KEY".into()];
    step.environment = environment.map(str::to_owned);
    support::plan("Deploy", vec![step])
}

/// Everything a runner is handed until nothing is left: none may carry `DEPLOY_KEY`.
async fn assert_never_handed_the_key(h: &Harness) {
    while let Some(assignment) = h.claim().await {
        assert!(
            !assignment.secrets.values().any(|v| v == DEPLOY_KEY)
                && !assignment.secrets.contains_key("DEPLOY_KEY"),
            "the runner was handed prod's secret: {assignment:?}"
        );
    }
}

// (a) The attack of the issue: a member pushes a branch whose copy of the deploy workflow
// triggers on that branch and drops its approval. Without the server's gate the step was
// queued and handed DEPLOY_KEY at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_branch_naming_the_environment_never_gets_its_secret() {
    let h = Harness::new().await;
    let run = h.push_deploy(Some("prod"), "feature").await;
    assert_never_handed_the_key(&h).await;
    let step = h.step(run, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some("environment 'prod' allows refs main; this run is on feature")
    );
    assert_eq!(step.attempts, 0, "refused before any dispatch");
    // A glob does not stretch: `main-evil`, `main/x` and a tag are not `main`.
    for branch in ["main-evil", "main/x", "Main"] {
        let run = h.push_deploy(Some("prod"), branch).await;
        assert_never_handed_the_key(&h).await;
        assert_eq!(
            h.step(run, "deploy").await.status,
            StepStatus::Failed,
            "{branch}"
        );
    }
    h.engine.shutdown().await;
}

// (b) Dropping `environment=` too gets nothing: DEPLOY_KEY is the environment's, not the
// repository's, so the step fails at claim for a secret that is set nowhere it may see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_environment_does_not_reach_its_secret() {
    let h = Harness::new().await;
    let run = h.push_deploy(None, "feature").await;
    assert_never_handed_the_key(&h).await;
    let step = support::wait_for(Duration::from_secs(10), "the step to fail", || async {
        Some(h.step(run, "deploy").await).filter(|s| s.status == StepStatus::Failed)
    })
    .await;
    assert_eq!(
        step.reason.as_deref(),
        Some("secret 'DEPLOY_KEY' is not set")
    );
    h.engine.shutdown().await;
}

// (c) On main, a plan with no approval step still waits for prod's review; the secret
// comes only after alice approves. (e) A rejection fails the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_main_the_engine_inserts_the_review_and_the_secret_follows_it() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    let run = h.push_deploy(Some("prod"), "main").await;
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Waiting);
    assert!(
        h.claim().await.is_none(),
        "nothing is dispatched before the review"
    );
    let (status, body) = h.decide(&alice.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["environment"], "prod");
    assert_eq!(body["reviewers"], json!(["alice"]));
    let assignment = h.claim().await.expect("the reviewed step is dispatched");
    assert_eq!(assignment.step_id, "deploy");
    assert_eq!(assignment.secrets["DEPLOY_KEY"], DEPLOY_KEY);
    // The decision is listed with its environment and recorded in the audit trail.
    let (status, approvals) = h
        .call(ADMIN, "GET", &format!("/api/runs/{run}/approvals"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(approvals[0]["environment"], "prod", "{approvals}");
    assert_eq!(approvals[0]["decided_by"], "alice");
    let events = h
        .store()
        .audit_events(&plue_store::AuditFilter {
            repos: None,
            run_id: Some(run),
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "approval.approve" && e.user_id == Some(alice.id)),
        "{events:?}"
    );

    // A re-run is reviewed again.
    let again = h.engine.executor.rerun(run, None).await.unwrap().unwrap();
    assert_eq!(h.step(again, "deploy").await.status, StepStatus::Waiting);
    assert_never_handed_the_key(&h).await;
    // (e) Rejected, it fails and gets nothing.
    let (status, body) = h.decide(&alice.token, again, "deploy", "reject").await;
    assert_eq!(status, 200, "{body}");
    let step = h.step(again, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some("environment 'prod' rejected by alice: checked")
    );
    assert_never_handed_the_key(&h).await;
    let (status, _) = h.decide(&alice.token, again, "deploy", "approve").await;
    assert_eq!(status, 409, "a decision is taken once");
    h.engine.shutdown().await;
}

// (d) Who may review: only a writer named among prod's reviewers, never the run's
// triggerer (prevent_self_review), never a reader or a stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_environments_reviewers_decide_and_never_their_own_run() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    let bob = h.person("bob", Some("writer")).await;
    let rita = h.person("rita", Some("reader")).await;
    let stranger = h.person("stranger", None).await;
    h.set_prod(json!({"allowed_refs": ["main"], "reviewers": ["alice", "@release"]}))
        .await;
    let run = h
        .deploy_pushed_by(triggerer("alice", Some(alice.id), None))
        .await;
    let cases = [
        ("", 401, "anonymous"),
        (stranger.token.as_str(), 404, "no role: the run is hidden"),
        (rita.token.as_str(), 403, "a reader"),
        (bob.token.as_str(), 403, "a writer not among the reviewers"),
        (alice.token.as_str(), 403, "a reviewer who started the run"),
        (ADMIN, 403, "an admin not among the reviewers"),
    ];
    for (token, expected, who) in cases {
        for verb in ["approve", "reject"] {
            let (status, body) = h.decide(token, run, "deploy", verb).await;
            assert_eq!(status, expected, "{who} {verb}: {body}");
        }
    }
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Waiting);
    assert_never_handed_the_key(&h).await;
    // A member of @release may, and only once.
    let group = h.store().create_group("release").await.unwrap();
    h.store().add_group_member(group, bob.id).await.unwrap();
    let (status, body) = h.decide(&bob.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    let assignment = h.claim().await.expect("dispatched after bob's review");
    assert_eq!(assignment.secrets["DEPLOY_KEY"], DEPLOY_KEY);
    h.engine.shutdown().await;
}

// (f) A pull request from a fork never gets an environment, whatever its head branch is
// called; the same pull request from a branch of the repository is judged by its head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_never_gets_an_environment() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    // The fork's head branch is called `main`, as prod allows.
    let fork =
        support::start_pr_run(&h.engine.executor, h.repo_id, &deploy(Some("prod")), true).await;
    let step = h.step(fork, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some("environments are not available to pull requests from forks")
    );
    assert_eq!(
        h.decide(&alice.token, fork, "deploy", "approve").await.0,
        409
    );
    assert_never_handed_the_key(&h).await;
    h.engine.shutdown().await;
}

// An environment the repository does not define is a failure, not a free pass; a wait
// timer delays the dispatch; a local run has no environments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undefined_environments_fail_and_wait_timers_delay() {
    let h = Harness::new().await;
    let run = h.push_deploy(Some("production"), "main").await;
    let step = h.step(run, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some("environment 'production' is not defined for acme/app")
    );
    let staging = json!({"allowed_refs": ["main"], "wait_timer_s": 3600});
    h.set_environment("staging", staging).await;
    let before = support::now_ms();
    let run = h.push_deploy(Some("staging"), "main").await;
    let step = h.step(run, "deploy").await;
    assert_eq!(step.status, StepStatus::Queued);
    assert!(step.ready_at.unwrap() >= before + 3_600_000, "{step:?}");
    assert!(h.claim().await.is_none(), "not before the wait timer");

    let local = support::start_plan_run(
        &h.engine.executor,
        "/w/deploy.plue.py",
        &deploy(Some("prod")),
        None,
    )
    .await;
    let step = h.step(local, "deploy").await;
    assert_eq!(
        step.status,
        StepStatus::Queued,
        "a local run is not gated: {step:?}"
    );
    let (status, view) = h
        .call(ADMIN, "GET", &format!("/api/runs/{local}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(support::step(&view, "deploy")["environment"], "prod");
    h.engine.shutdown().await;
}

// Only maintainers change environments and their secrets; readers see settings and
// names, never values; every change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_are_a_maintainers_and_never_show_a_value() {
    let h = Harness::new().await;
    let maya = h.person("maya", Some("maintainer")).await;
    let bob = h.person("bob", Some("writer")).await;
    let rita = h.person("rita", Some("reader")).await;
    let stranger = h.person("stranger", None).await;
    let wide = json!({"allowed_refs": ["**"], "reviewers": []});
    for (token, expected, who) in [
        ("", 401, "anonymous"),
        (stranger.token.as_str(), 404, "no role"),
        (rita.token.as_str(), 403, "a reader"),
        (bob.token.as_str(), 403, "a writer"),
    ] {
        let put = h.put_prod(token, wide.clone()).await;
        assert_eq!(put.0, expected, "{who} widening prod: {}", put.1);
        let secret = h.put_prod_key(token, "mine").await;
        assert_eq!(
            secret.0, expected,
            "{who} replacing the secret: {}",
            secret.1
        );
        let delete = h
            .call(
                token,
                "DELETE",
                "/api/repos/acme/app/environments/prod",
                None,
            )
            .await;
        assert_eq!(delete.0, expected, "{who} deleting prod: {}", delete.1);
    }
    let (status, listed) = h
        .call(&rita.token, "GET", "/api/repos/acme/app/environments", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["allowed_refs"], json!(["main"]), "{listed}");
    let (status, names) = h
        .call(
            &rita.token,
            "GET",
            "/api/repos/acme/app/environments/prod/secrets",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(names[0]["name"], "DEPLOY_KEY");
    assert!(!names.to_string().contains(DEPLOY_KEY));
    let prod =
        json!({"allowed_refs": ["main", "release/*"], "reviewers": ["alice"], "wait_timer_s": 5});
    let (status, body) = h.put_prod(&maya.token, prod).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wait_timer_s"], 5);
    let (status, body) = h
        .call(
            &maya.token,
            "PUT",
            "/api/repos/acme/app/environments/bad%20name",
            Some(wide.clone()),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let events = h
        .store()
        .audit_events(&plue_store::AuditFilter {
            repos: Some(vec![h.repo_id]),
            run_id: None,
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"environment.put"), "{actions:?}");
    assert!(actions.contains(&"environment.secret.put"), "{actions:?}");
    assert!(
        !events.iter().any(|e| e.detail.contains(DEPLOY_KEY)),
        "no secret value in the audit trail"
    );
    h.engine.shutdown().await;
}

// A review loop going back to a step under an environment needs a new review: the
// approval of iteration 1 does not carry over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_loop_going_back_is_reviewed_again() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    let mut plan = deploy(Some("prod"));
    let mut review = support::bash_step("review", "false");
    review.depends_on = vec!["deploy".into()];
    review.loop_to = Some("deploy".into());
    review.max_loops = Some(1);
    plan.steps.push(review);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    let (status, body) = h.decide(&alice.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    let first = h.claim().await.expect("iteration 1 after its review");
    assert_eq!(first.secrets["DEPLOY_KEY"], DEPLOY_KEY);
    h.complete(first.attempt_id, run, wire::Outcome::Succeeded)
        .await;
    let reviewing = h.claim().await.expect("the reviewing step");
    assert_eq!(reviewing.step_id, "review");
    h.complete(reviewing.attempt_id, run, wire::Outcome::Failed)
        .await;
    let step = h.step(run, "deploy").await;
    assert_eq!(
        (step.status.as_str(), step.iteration),
        ("waiting", 2),
        "{step:?}"
    );
    assert_eq!(step.review_passed_at, None);
    assert_never_handed_the_key(&h).await;
    let (status, body) = h.decide(&alice.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    let second = h.claim().await.expect("iteration 2 after its own review");
    assert_eq!(second.step_id, "deploy");
    assert_eq!(second.secrets["DEPLOY_KEY"], DEPLOY_KEY);
    h.engine.shutdown().await;
}

// The store's side on both backends: names are case-insensitive, a replaced environment
// keeps its id and secrets, deleting it deletes them, and a review's decision moves the
// step back to pending with the time it passed.
#[tokio::test]
async fn environments_are_stored_alike_on_both_backends() {
    use plue_store::{EnvironmentSettings, Reviewer, Verdict};
    for (store, _dir) in support::stores().await {
        let backend = store.backend();
        let repo_id = support::create_repo(&store).await;
        let settings = EnvironmentSettings {
            allowed_refs: vec!["main".into()],
            reviewers: vec!["alice".into()],
            wait_timer_s: 0,
            prevent_self_review: true,
            untrusted_id_tokens: false,
        };
        let prod = store
            .put_environment(repo_id, "Prod", &settings)
            .await
            .unwrap();
        store
            .put_environment_secret(prod.id, "DEPLOY_KEY", "sealed")
            .await
            .unwrap();
        let replaced = EnvironmentSettings {
            wait_timer_s: 7,
            untrusted_id_tokens: true,
            ..settings.clone()
        };
        let again = store
            .put_environment(repo_id, "prod", &replaced)
            .await
            .unwrap();
        assert_eq!(
            (again.id, again.name.as_str()),
            (prod.id, "prod"),
            "{backend}"
        );
        assert_eq!(again.settings, replaced, "{backend}");
        assert_eq!(
            store
                .environment(repo_id, "PROD")
                .await
                .unwrap()
                .unwrap()
                .id,
            prod.id
        );
        let sealed = store
            .sealed_environment_secrets(prod.id, &["DEPLOY_KEY".into(), "OTHER".into()])
            .await
            .unwrap();
        assert_eq!(sealed.len(), 1, "{backend}");

        let executor = support::executor(&store, 8);
        let run = support::start_push_run(&executor, repo_id, &deploy(Some("prod")), "main").await;
        let found = store
            .run_environments(run, &["prod"])
            .await
            .unwrap()
            .unwrap();
        let origin = found.repo.unwrap();
        assert_eq!(origin.branch.as_deref(), Some("main"), "{backend}");
        assert!(!origin.from_fork);
        assert!(found.defined.contains_key("prod"));
        assert_eq!(
            store.step_run(run, "deploy").await.unwrap().unwrap().status,
            StepStatus::Waiting
        );
        let alice = Reviewer {
            name: "alice",
            user_id: None,
        };
        let now = support::now_ms();
        let decided = store
            .decide_review(run, "deploy", "prod", Verdict::Approve, alice, "ok", now)
            .await
            .unwrap();
        assert_eq!(decided, plue_store::Decided::Done, "{backend}");
        let step = store.step_run(run, "deploy").await.unwrap().unwrap();
        assert_eq!(
            (step.status.as_str(), step.review_passed_at),
            ("pending", Some(now))
        );
        let listed = store.approvals_of_run(run).await.unwrap();
        assert_eq!(listed[0].environment.as_deref(), Some("prod"), "{backend}");
        assert_eq!(listed[0].decided_by, "alice");

        assert!(store.delete_environment(repo_id, "PROD").await.unwrap());
        assert!(store.environment(repo_id, "prod").await.unwrap().is_none());
        assert!(store
            .sealed_environment_secrets(prod.id, &["DEPLOY_KEY".into()])
            .await
            .unwrap()
            .is_empty());
    }
}

// The run page shows each step's environment, and why a step waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_shows_the_environment_and_the_review() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    let run = h.push_deploy(Some("prod"), "main").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirects
        .post(format!("{}/login", h.engine.url))
        .form(&[("token", alice.token.as_str()), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    assert!(!cookies.is_empty(), "signed in: {}", login.status());
    let page = no_redirects
        .get(format!("{}/runs/{run}", h.engine.url))
        .header(reqwest::header::COOKIE, cookies.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-environment="prod""#), "{html}");
    assert!(
        html.contains("waiting for a review of environment prod"),
        "{html}"
    );
    h.engine.shutdown().await;
}

/// Runs `plue args...` against the harness's engine with `token`, `stdin` on its input;
/// whether it succeeded and what it printed (stdout, then stderr).
fn plue(h: &Harness, token: &str, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plue"))
        .args(args)
        .env("PLUE_SERVER", &h.engine.url)
        .env("PLUE_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("plue");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// `plue env` for maintainers: set, list, secrets by stdin, delete; a writer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_env_manages_environments() {
    let h = Harness::new().await;
    let maya = h.person("maya", Some("maintainer")).await.token;
    let bob = h.person("bob", Some("writer")).await.token;
    /// Who runs `plue env ...` with what on stdin, whether it succeeds, and what its output
    /// must hold (each of `shows`, a line starting with each of `starts`, or exactly
    /// `exactly`).
    struct Case {
        token: String,
        args: &'static str,
        stdin: &'static str,
        ok: bool,
        shows: &'static [&'static str],
        starts: &'static [&'static str],
        exactly: Option<&'static str>,
    }
    let case = |token: &String, args, stdin, ok| Case {
        token: token.clone(),
        args,
        stdin,
        ok,
        shows: &[],
        starts: &[],
        exactly: None,
    };
    let cases = [
        Case {
            shows: &["staging\trefs=main,release/*\treviewers=@release\twait=5s\tself-review=refused"],
            ..case(&maya, "set acme/app staging --allow main --allow release/* --reviewer @release --wait-timer 5", "", true)
        },
        Case {
            starts: &["prod\trefs=main", "staging\t"],
            ..case(&maya, "list acme/app", "", true)
        },
        case(&maya, "secret-set acme/app staging STAGING_KEY", "s3cr3t\n", true),
        Case {
            exactly: Some("STAGING_KEY"),
            ..case(&maya, "secret-list acme/app staging", "", true)
        },
        Case {
            shows: &["maintainer"],
            ..case(&bob, "set acme/app prod --allow **", "", false)
        },
        case(&maya, "secret-delete acme/app staging STAGING_KEY", "", true),
        case(&maya, "delete acme/app staging", "", true),
        // Deleted twice.
        case(&maya, "delete acme/app staging", "", false),
    ];
    let h = std::sync::Arc::new(h);
    for case in cases {
        let args: Vec<&str> = std::iter::once("env").chain(case.args.split(' ')).collect();
        let shared = h.clone();
        let (ok, out) =
            tokio::task::spawn_blocking(move || plue(&shared, &case.token, &args, case.stdin))
                .await
                .unwrap();
        assert_eq!(ok, case.ok, "plue env {}: {out}", case.args);
        for shown in case.shows {
            assert!(
                out.contains(shown),
                "plue env {}: no {shown:?} in {out}",
                case.args
            );
        }
        if let Some(exactly) = case.exactly {
            assert_eq!(out.trim(), exactly, "plue env {}", case.args);
        }
        for start in case.starts {
            assert!(
                out.lines().any(|l| l.starts_with(start)),
                "plue env {}: no line starting {start:?} in {out}",
                case.args
            );
        }
    }
    match std::sync::Arc::try_unwrap(h) {
        Ok(h) => h.engine.shutdown().await,
        Err(_) => panic!("the harness is still shared"),
    }
}

/// The deploy workflow as `main` has it: an approval, then `deploy` under prod.
const DEPLOY_ON_MAIN: &str = r#"
def workflow(ctx):
    gate = Step.approval("gate", approvers=["alice"])
    return Plan("Deploy", triggers=[Trigger.manual(), Trigger.on_push(branch="main")], steps=[
        gate,
        Step.bash("deploy", "./deploy.sh", secrets=["DEPLOY_KEY"], environment="prod",
                  depends_on=[gate]),
    ])
"#;

/// The same file as a member pushed it on `feature`: it triggers there and has no gate.
const DEPLOY_ON_FEATURE: &str = r#"
def workflow(ctx):
    return Plan("Deploy", triggers=[Trigger.manual(), Trigger.on_push(branch="feature")], steps=[
        Step.bash("deploy", "./deploy.sh", secrets=["DEPLOY_KEY"], environment="prod"),
    ])
"#;

// (a) through the real path: a git repository whose `feature` branch holds its own copy
// of the deploy workflow without the approval, evaluated by the engine's evaluator and
// started by the registry. The plan is the attacker's; the gate is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branchs_own_copy_of_the_workflow_is_evaluated_and_still_gated() {
    let h = Harness::start(true).await;
    let origin = origin_repository(&h, DEPLOY_ON_MAIN, &["alice"]).await;
    support::git_sh(&origin, "git checkout -q -b feature");
    std::fs::write(origin.join(".plue/deploy.plue.py"), DEPLOY_ON_FEATURE).unwrap();
    support::git_sh(
        &origin,
        "git commit -qam 'deploy from feature, no gate' && git checkout -q main",
    );
    let dispatch = |git_ref: &'static str| {
        h.call(
            ADMIN,
            "POST",
            "/api/repos/octo/hello/dispatch",
            Some(json!({"workflow": "deploy", "ref": git_ref})),
        )
    };
    let (status, created) = dispatch("feature").await;
    assert_eq!(status, 201, "{created}");
    let run = created["run_id"].as_i64().unwrap();
    let step = h.step(run, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed, "{step:?}");
    assert_eq!(
        step.reason.as_deref(),
        Some("environment 'prod' allows refs main; this run is on feature")
    );
    assert_never_handed_the_key(&h).await;
    // On main the same step waits for prod's review after its own approval.
    let (status, created) = dispatch("main").await;
    assert_eq!(status, 201, "{created}");
    let run = created["run_id"].as_i64().unwrap();
    assert_eq!(h.step(run, "gate").await.status, StepStatus::Waiting);
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Pending);
    assert_never_handed_the_key(&h).await;
    h.engine.shutdown().await;
}

/// `main`'s deploy workflow without an approval: prod's own settings decide alone.
const DEPLOY_BY_HAND: &str = r#"
def workflow(ctx):
    return Plan("Deploy", triggers=[Trigger.manual()], steps=[
        Step.bash("deploy", "./deploy.sh", secrets=["DEPLOY_KEY"], environment="prod"),
    ])
"#;

/// A git repository under the harness's directory whose `main` holds `on_main` as
/// `.plue/deploy.plue.py`, registered as `octo/hello` with prod (allowed on `main`,
/// reviewed by `reviewers`) and prod's DEPLOY_KEY. Its directory.
async fn origin_repository(h: &Harness, on_main: &str, reviewers: &[&str]) -> std::path::PathBuf {
    let origin = h.sandbox.path("origin");
    std::fs::create_dir_all(origin.join(".plue")).unwrap();
    std::fs::write(origin.join(".plue/deploy.plue.py"), on_main).unwrap();
    support::git_sh(
        &origin,
        "git init -q -b main . && git add -A && git commit -qm main",
    );
    h.store()
        .create_repo(&plue_store::NewRepo {
            name: "octo/hello",
            clone_url: origin.to_str().unwrap(),
            forge: "github",
            webhook_secret_sealed: "plain:s",
            api_url: None,
            api_token_sealed: None,
            default_branch: Some("main"),
            forge_repo_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    for (method, path, body) in [
        (
            "PUT",
            "/api/repos/octo/hello/environments/prod",
            json!({"allowed_refs": ["main"], "reviewers": reviewers}),
        ),
        (
            "PUT",
            "/api/repos/octo/hello/environments/prod/secrets/DEPLOY_KEY",
            json!({"value": DEPLOY_KEY}),
        ),
    ] {
        let (status, answer) = h.call(ADMIN, method, path, Some(body)).await;
        assert!(status == 200 || status == 204, "{path}: {status} {answer}");
    }
    origin
}

// A writer who may push tags pushes a tag named `main` at its own commit, then dispatches
// `main` (or just the default branch). git's own order of names puts `refs/tags/main`
// before `refs/heads/main`, so the run was recorded on branch `main` while running the
// tag's commit: prod (allowed on `main`, no reviewer) handed DEPLOY_KEY to the pushed
// `./exfiltrate.sh`. A short name is now a branch first, a tag only when no branch has
// that name, and a tag is never a branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_named_like_an_allowed_branch_is_not_that_branch() {
    let h = Harness::start(true).await;
    let origin = origin_repository(&h, DEPLOY_BY_HAND, &[]).await;
    support::git_sh(
        &origin,
        "git checkout -q -b evil && sed -i 's#./deploy.sh#./exfiltrate.sh#' .plue/deploy.plue.py \
         && git commit -qam evil && git tag main && git tag v1 && git checkout -q main",
    );
    let main_sha = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "refs/heads/main"])
            .current_dir(&origin)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let dispatch =
        |body: Value| h.call(ADMIN, "POST", "/api/repos/octo/hello/dispatch", Some(body));
    for body in [
        json!({"workflow": "deploy", "ref": "main"}),
        json!({"workflow": "deploy"}),
    ] {
        let (status, created) = dispatch(body.clone()).await;
        assert_eq!(status, 201, "{body}: {created}");
        let run = created["run_id"].as_i64().unwrap();
        let row = h.store().run(run).await.unwrap().unwrap();
        assert_eq!(row.sha, main_sha, "{body}: the run is not main's commit");
        let assignment = h.claim().await.expect("main's deploy is dispatched");
        let action = format!("{:?}", assignment.action);
        assert!(
            !action.contains("exfiltrate"),
            "the tag's code ran: {action}"
        );
        assert!(action.contains("./deploy.sh"), "{action}");
    }
    // A tag, by its short name or in full, is not a branch: prod is refused.
    for git_ref in ["v1", "refs/tags/main"] {
        let (status, created) = dispatch(json!({"workflow": "deploy", "ref": git_ref})).await;
        assert_eq!(status, 201, "{git_ref}: {created}");
        let run = created["run_id"].as_i64().unwrap();
        let step = h.step(run, "deploy").await;
        assert_eq!(step.status, StepStatus::Failed, "{git_ref}: {step:?}");
        assert!(
            step.reason
                .as_deref()
                .unwrap_or_default()
                .contains("not a branch"),
            "{git_ref}: {step:?}"
        );
        assert_never_handed_the_key(&h).await;
    }
    h.engine.shutdown().await;
}

// A reviewer pushes to main; another writer re-runs that run (a flaky step, or on the
// reviewer's asking). The re-run's triggerer is the re-runner, so the pusher reviewed the
// deploy of its own push: prevent_self_review refused it on the pushed run only. Now
// whoever started any run a re-run repeats may not decide it either (exclude_triggerer
// of an approval step alike), while another reviewer still may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_is_never_reviewed_by_who_started_the_run_it_repeats() {
    let h = Harness::new().await;
    let mallory = h.person("mallory", Some("writer")).await;
    let bob = h.person("bob", Some("writer")).await;
    let alice = h.person("alice", Some("writer")).await;
    h.set_prod(json!({"allowed_refs": ["main"], "reviewers": ["alice", "mallory"]}))
        .await;
    let pushed = h
        .deploy_pushed_by(triggerer(
            "mallory-gh",
            Some(mallory.id),
            Some("gitea:mallory-gh"),
        ))
        .await;
    assert_eq!(
        h.decide(&mallory.token, pushed, "deploy", "approve")
            .await
            .0,
        403,
        "the pusher reviews its own push"
    );
    // bob re-runs it, and the re-run of the re-run.
    let mut run = pushed;
    for _ in 0..2 {
        let (status, created) = h
            .call(&bob.token, "POST", &format!("/api/runs/{run}/rerun"), None)
            .await;
        assert_eq!(status, 200, "{created}");
        run = created["run_id"].as_i64().unwrap();
        assert_eq!(h.step(run, "deploy").await.status, StepStatus::Waiting);
        for verb in ["approve", "reject"] {
            let (status, body) = h.decide(&mallory.token, run, "deploy", verb).await;
            assert_eq!(
                status, 403,
                "mallory {verb}s the re-run of her push: {body}"
            );
            assert!(
                body.to_string().contains("mallory"),
                "the refusal names who: {body}"
            );
        }
        assert_never_handed_the_key(&h).await;
    }
    // Another reviewer decides it.
    let (status, body) = h.decide(&alice.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    let assignment = h.claim().await.expect("dispatched after alice's review");
    assert_eq!(assignment.secrets["DEPLOY_KEY"], DEPLOY_KEY);
    h.engine.shutdown().await;
}

// A reviewer re-runs (or dispatches, or pushes) a deploy and at once approves the run it
// is about to get (run ids are sequential) from several connections. The run's triggerer
// was recorded after the run's first advance had put the step up for review, so an
// approval landing in between found no triggerer and passed prevent_self_review. The
// triggerer is now stored before the run's first advance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_review_is_never_decided_before_the_run_knows_who_started_it() {
    let h = std::sync::Arc::new(Harness::new().await);
    let mallory = h.person("mallory", Some("writer")).await;
    let bob = h.person("bob", Some("writer")).await;
    h.set_prod(json!({"allowed_refs": ["main"], "reviewers": ["mallory"]}))
        .await;
    let pushed = h
        .deploy_pushed_by(triggerer("bob", Some(bob.id), None))
        .await;
    for _ in 0..30 {
        let next = h.store().list_runs(1).await.unwrap()[0].id + 1;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut spammers = Vec::new();
        for _ in 0..6 {
            let (h, stop, token) = (h.clone(), stop.clone(), mallory.token.clone());
            spammers.push(tokio::spawn(async move {
                let mut decided = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, body) = h.decide(&token, next, "deploy", "approve").await;
                    if status == 200 {
                        decided.push(body);
                    }
                }
                decided
            }));
        }
        let (status, created) = h
            .call(
                &mallory.token,
                "POST",
                &format!("/api/runs/{pushed}/rerun"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["run_id"], next);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for spammer in spammers {
            let decided = spammer.await.unwrap();
            assert!(
                decided.is_empty(),
                "mallory approved the deploy she started: {decided:?}"
            );
        }
        assert_eq!(h.step(next, "deploy").await.status, StepStatus::Waiting);
    }
    assert_never_handed_the_key(&h).await;
    match std::sync::Arc::try_unwrap(h) {
        Ok(h) => h.engine.shutdown().await,
        Err(_) => panic!("the harness is still shared"),
    }
}

// Held: a maintainer of another repository, and a maintainer's token narrowed to another
// repository or to writer, change nothing of acme/app's prod and decide nothing of its
// reviews; the first does not even learn that acme/app exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_elsewhere_or_a_narrowed_token_cannot_touch_prod() {
    let h = Harness::new().await;
    let other = support::create_named_repo(h.store(), "acme/other").await;
    let olga = h.person("olga", None).await;
    h.store()
        .grant_role(other, olga.id, "maintainer")
        .await
        .unwrap();
    let maya = h.person("maya", Some("maintainer")).await;
    let elsewhere =
        support::narrowed_token(h.store(), maya.id, None, Some(r#"["acme/other"]"#)).await;
    let as_writer = support::narrowed_token(h.store(), maya.id, Some("writer"), None).await;
    h.set_prod(json!({"allowed_refs": ["main"], "reviewers": ["maya"]}))
        .await;
    let run = h.push_deploy(Some("prod"), "main").await;
    let wide = json!({"allowed_refs": ["**"], "reviewers": []});
    for (token, expected, who) in [
        (
            olga.token.as_str(),
            404,
            "a maintainer of another repository",
        ),
        (
            elsewhere.as_str(),
            404,
            "maya's token narrowed to acme/other",
        ),
        (as_writer.as_str(), 403, "maya's token narrowed to writer"),
    ] {
        let (status, body) = h.put_prod(token, wide.clone()).await;
        assert_eq!(status, expected, "{who} widening prod: {body}");
        let (status, body) = h.put_prod_key(token, "mine").await;
        assert_eq!(status, expected, "{who} replacing the secret: {body}");
        if expected == 404 {
            assert!(!body.to_string().contains("prod"), "{who}: {body}");
            let (status, _) = h.decide(token, run, "deploy", "approve").await;
            assert_eq!(status, 404, "{who} approving");
        }
    }
    // maya's writer-narrowed token is still maya, named among prod's reviewers: a review
    // is a writer's decision.
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Waiting);
    assert_never_handed_the_key(&h).await;
    h.engine.shutdown().await;
}

// Held: in one run on main, a step naming no environment and a step of another
// environment ask for DEPLOY_KEY and get nothing (it is prod's alone); prod's step,
// reviewed, is checked again when claimed — prod narrowed to release/* after the review
// fails it instead of handing it the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prods_secret_stays_with_prods_step_and_the_claim_checks_again() {
    let h = Harness::new().await;
    let alice = h.person("alice", Some("writer")).await;
    h.set_environment("staging", json!({"allowed_refs": ["**"]}))
        .await;
    let mut steps = Vec::new();
    for (id, environment) in [
        ("build", None),
        ("stage", Some("staging")),
        ("deploy", Some("prod")),
    ] {
        let mut step: Step = support::bash_step(id, "./run.sh");
        step.secrets = vec!["DEPLOY_KEY".into()];
        step.environment = environment.map(str::to_owned);
        steps.push(step);
    }
    let plan = support::plan("Deploy", steps);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    assert_never_handed_the_key(&h).await;
    for id in ["build", "stage"] {
        let step = h.step(run, id).await;
        assert_eq!(step.status, StepStatus::Failed, "{id}: {step:?}");
        assert_eq!(
            step.reason.as_deref(),
            Some("secret 'DEPLOY_KEY' is not set"),
            "{id}"
        );
    }
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Waiting);
    let (status, body) = h.decide(&alice.token, run, "deploy", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.step(run, "deploy").await.status, StepStatus::Queued);
    h.set_prod(json!({"allowed_refs": ["release/*"], "reviewers": ["alice"]}))
        .await;
    assert_never_handed_the_key(&h).await;
    let step = h.step(run, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed, "{step:?}");
    assert_eq!(
        step.reason.as_deref(),
        Some("environment 'prod' allows refs release/*; this run is on main")
    );
    h.engine.shutdown().await;
}

// A run started by someone is stored with its triggerer in one transaction (so no advance,
// on any replica, sees the run without it), on both backends.
#[tokio::test]
async fn a_run_is_stored_with_its_triggerer_on_both_backends() {
    for (store, _dir) in support::stores().await {
        let backend = store.backend();
        let repo_id = support::create_repo(&store).await;
        let plan = deploy(Some("prod"));
        let json = serde_json::to_string(&plan).unwrap();
        let new = plue_store::NewRun {
            workflow_source: "acme/app",
            workflow_path: ".plue/deploy.plue.py",
            workspace: &wire::WorkspaceSource::Empty,
            repo: Some(plue_store::RunRepo {
                repo_id,
                secrets_allowed: true,
            }),
            ..plue_store::testing::local_run(&plan, &json)
        };
        let mallory = triggerer("mallory", Some(7), Some("gitea:mallory"));
        let run = store.create_run_by(&new, 4, &mallory).await.unwrap().id;
        let found = store.trigger_of(run).await.unwrap().expect("a triggerer");
        assert_eq!(
            (
                found.name.as_str(),
                found.user_id,
                found.forge_login.as_deref()
            ),
            ("mallory", Some(7), Some("gitea:mallory")),
            "{backend:?}"
        );
        let nobody = store.create_run(&new, 4).await.unwrap().id;
        assert!(
            store.trigger_of(nobody).await.unwrap().is_none(),
            "{backend:?}"
        );
    }
}
