//! Red team of issue 35's dashboard and CLI work: an in-process engine (the `plue serve`
//! code) with repository `acme/app`, users of each role and a real local `plue runner`,
//! played against by someone holding a reader's, writer's or demoted maintainer's token,
//! or writing a step's log.
//!
//! What is played: a maintainer who opened a debug session of a step in an environment
//! keeps its shell (with the environment's secrets) after being demoted to writer; and a
//! step's annotations carrying markup onto the run page or onto another step.

use std::time::Duration;

use crate::support;

use evaluator::plan::Step;
use plue_store::Store;
use serde_json::{json, Value};

const ADMIN: &str = support::ADMIN_TOKEN;
const KEY: &str = "a vault key long enough for the red team's tests";
const LIMIT: Duration = Duration::from_secs(90);

/// The engine with `acme/app` and one local runner (its pid).
type Harness = support::RepoEngine<u32>;

/// The engine with `acme/app` and one local runner.
async fn start(name: &str) -> Harness {
    Harness::with_local_runner(name, KEY, "redteam-runner").await
}

impl Harness {
    /// A push run of `steps` on `main` of `acme/app`, waited for until it is final.
    async fn final_run(&self, steps: Vec<Step>) -> i64 {
        let plan = support::plan("ci", steps);
        let run = support::start_push_run(&self.engine.executor, self.repo_id, &plan, "main").await;
        self.wait_run(run, LIMIT).await;
        run
    }
}

/// Debug: the role a session needed to open (a maintainer's, for a step in an environment,
/// whose secrets the shell holds) is the role it needs to be kept. A maintainer demoted to
/// writer loses the session: the attached stream ends, and the session answers 403.
/// Failed before the fix (`mine` and the stream's recheck asked for `writer` only): the
/// stream ran on until its idle timeout and the GET answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_demoted_to_writer_loses_an_environments_debug_session() {
    let _serial = support::serial().await;
    let h = start("redteam-demoted").await;
    let (status, body) = h
        .call(
            ADMIN,
            "PUT",
            "/api/repos/acme/app/environments/prod",
            Some(json!({"allowed_refs": ["main"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (mia, _, token) =
        support::user_with_token(h.store(), "mia", &[(h.repo_id, "maintainer")]).await;
    let mut deploy = support::bash_step("deploy", "exit 3");
    deploy.environment = Some("prod".into());
    let run = h.final_run(vec![deploy]).await;

    let (status, session) = h.open_debug(&token, run, "deploy", 300).await;
    assert_eq!(status, 201, "the maintainer opens: {session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let stream = h.attach(&token, &id).await;
    assert_eq!(stream.status(), 200);

    h.store()
        .grant_role(h.repo_id, mia, "writer")
        .await
        .expect("demote mia");

    // The attached stream ends within seconds (it asks again every 2).
    let said = h
        .transcript(&token, &id, stream, None, Duration::from_secs(20))
        .await;
    let end = said.end.expect("the demoted maintainer's stream ran on");
    assert!(end.contains("maintainer"), "{end}");
    let row = h.store().debug_session(&id).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        plue_types::status::DebugSessionStatus::Ended,
        "{row:?}"
    );
    // And the session is not theirs to read or end any more.
    for method in ["GET", "DELETE"] {
        let (status, body) = h
            .call(&token, method, &format!("/api/debug/{id}"), None)
            .await;
        assert_eq!(status, 403, "{method} by the demoted maintainer: {body}");
    }
    // Both ends are in the audit trail: who opened it, and why the engine ended it.
    let trail = h
        .store()
        .audit_events(&plue_store::AuditFilter {
            run_id: Some(run),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let opened = trail.iter().find(|e| e.action == "debug.open");
    assert_eq!(opened.and_then(|e| e.user_id), Some(mia), "{trail:?}");
    let ended = trail.iter().find(|e| e.action == "debug.end");
    assert!(
        ended.is_some_and(|e| e.detail.contains("maintainer") && e.detail.contains(&id[..8])),
        "{trail:?}"
    );
    assert!(
        !trail.iter().any(|e| e.detail.contains(&id)),
        "a whole session id is in the trail: {trail:?}"
    );
}

/// Annotations: markup in a step's `::error` line (message, title, file) is text on the
/// run page and in the API, and lands on the step that printed it, never on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotation_markup_is_text_on_the_run_page_and_stays_on_its_step() {
    let _serial = support::serial().await;
    let h = start("redteam-annotations").await;
    let evil = support::bash_step(
        "evil",
        "echo '::error file=<img src=x onerror=alert(1)>,title=<b>bold</b>::<script>alert(1)</script> step=quiet'; exit 1",
    );
    let quiet = support::bash_step("quiet", "echo fine");
    let run = h.final_run(vec![evil, quiet]).await;

    let (status, body) = h
        .call(ADMIN, "GET", &format!("/api/runs/{run}/annotations"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(text.contains("<script>alert(1)</script>"), "{text}");
    let found: Vec<&Value> = body["annotations"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    assert!(!found.is_empty(), "{body}");
    for a in found {
        assert_eq!(a["step"], "evil", "{a}");
    }

    let cookie = support::dashboard_session(&h.engine.url, ADMIN).await;
    let page = h
        .http
        .get(format!("{}/runs/{run}", h.engine.url))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)"),
        "the annotation is not on the page"
    );
    for raw in ["<script>alert(1)", "<img src=x", "<b>bold</b>"] {
        assert!(!html.contains(raw), "{raw} reached the page as markup");
    }
}

/// Re-run failed steps, debug and dispatch, per caller: a reader, a writer's token narrowed
/// to reading or to another repository, a stranger, the anonymous and a runner's token
/// start nothing; and the dashboard's forms refuse a writer's post with a forged CSRF
/// token (a cross-site form) before anything is asked of the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_narrowed_tokens_runners_and_forged_forms_start_nothing() {
    let _serial = support::serial().await;
    let h = start("redteam-who").await;
    let store = h.store();
    other_repo(store).await;
    let (_, _, reader) = support::user_with_token(store, "rita", &[(h.repo_id, "reader")]).await;
    let (wendy, _, writer) =
        support::user_with_token(store, "wendy", &[(h.repo_id, "writer")]).await;
    let (_, _, stranger) = support::user_with_token(store, "sam", &[]).await;
    let read_only = support::narrowed_token(store, wendy, Some("reader"), None).await;
    let elsewhere = support::narrowed_token(store, wendy, None, Some(r#"["acme/other"]"#)).await;
    let runner =
        support::register_runner(&h.http, &h.engine.url, support::RUNNER_TOKEN, "rogue").await;
    let run = h
        .final_run(vec![support::bash_step("build", "exit 1")])
        .await;
    let runs_before = runs_count(store).await;

    let rerun = format!("/api/runs/{run}/rerun?failed=true");
    let debug = format!("/api/runs/{run}/steps/build/debug");
    let dispatch = "/api/repos/acme/app/dispatch".to_owned();
    let dispatch_body = json!({"workflow": "ci.plue.py", "inputs": {}});
    for (who, token, expected) in [
        ("the anonymous", "", 401),
        ("a runner's token", runner.as_str(), 401),
        ("a stranger", stranger.as_str(), 404),
        (
            "a token narrowed to another repository",
            elsewhere.as_str(),
            404,
        ),
        ("a reader", reader.as_str(), 403),
        (
            "a writer's token narrowed to reading",
            read_only.as_str(),
            403,
        ),
    ] {
        for (path, body) in [
            (&rerun, None),
            (&debug, Some(json!({}))),
            (&dispatch, Some(dispatch_body.clone())),
        ] {
            let (status, answer) = h.call(token, "POST", path, body).await;
            assert_eq!(status, expected, "{who} POST {path}: {answer}");
        }
    }
    assert_eq!(runs_count(store).await, runs_before, "a run was started");
    assert!(store
        .live_debug_session_of(
            store
                .step_run(run, "build")
                .await
                .unwrap()
                .map(|s| s.id)
                .unwrap()
        )
        .await
        .unwrap()
        .is_none());

    // The writer's own session, with a forged CSRF token: refused by the dashboard.
    let cookie = support::dashboard_session(&h.engine.url, &writer).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, form) in [
        (
            format!("/runs/{run}/rerun-failed"),
            vec![("csrf", "forged")],
        ),
        (
            "/repos/acme/app/dispatch".to_owned(),
            vec![("csrf", "forged"), ("workflow", "ci.plue.py")],
        ),
        (
            format!("/runs/{run}/steps/build/approve"),
            vec![("csrf", "forged"), ("comment", "lgtm"), ("back", "run")],
        ),
    ] {
        let response = no_redirects
            .post(format!("{}{path}", h.engine.url))
            .header(reqwest::header::COOKIE, &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "a forged form to {path}");
    }
    assert_eq!(runs_count(store).await, runs_before);
}

/// Another repository, `acme/other`, for tokens narrowed to it.
async fn other_repo(store: &Store) -> i64 {
    support::create_named_repo(store, "acme/other").await
}

/// How many runs the store holds.
async fn runs_count(store: &Store) -> usize {
    store.list_runs(10_000).await.unwrap().len()
}

/// A pull request from a fork (someone who may only open one): its failed step's debug
/// shell, opened by a writer, holds none of the repository's secrets the step asks for,
/// and re-running its failed steps makes another fork run (no secrets), not a trusted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forks_step_gets_no_secret_through_debug_or_a_rerun_of_its_failed_steps() {
    let _serial = support::serial().await;
    let h = start("redteam-fork").await;
    const SECRET: &str = "s3cr3t-the-fork-must-not-see";
    let secret = Some(json!({ "value": SECRET }));
    h.call_ok(
        ADMIN,
        "PUT",
        "/api/repos/acme/app/secrets/SECRET_X",
        secret,
        204,
    )
    .await;
    let (_, _, writer) =
        support::user_with_token(h.store(), "wendy", &[(h.repo_id, "writer")]).await;
    let mut step = support::bash_step("build", "echo \"had=${SECRET_X:-none}\"; exit 1");
    step.secrets = vec!["SECRET_X".into()];
    let plan = support::plan("ci", vec![step]);
    let run = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, true).await;
    h.wait_run(run, LIMIT).await;

    // Re-running its failed steps: a fork's run again.
    let (status, created) = h
        .call(
            &writer,
            "POST",
            &format!("/api/runs/{run}/rerun?failed=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let again = created["run_id"].as_i64().expect("the new run's id");
    let row = h.store().run(again).await.unwrap().unwrap();
    assert!(
        !row.secrets_allowed,
        "the re-run of a fork's run may read secrets"
    );

    // The shared runner token's runner takes forks' steps: the step ran, and its shell
    // is played.
    let id = h.open_debug_ok(&writer, run, "build", 60).await;
    let stream = h.attach(&writer, &id).await;
    let script = "echo \"has=${SECRET_X:-none}\"; exit 0\n";
    let said = h
        .transcript(&writer, &id, stream, Some(script), LIMIT)
        .await;
    let (typed, text) = (said.ready, said.text);
    assert!(typed, "the shell never became ready: {text}");
    assert!(text.contains("had=none"), "the step again: {text}");
    assert!(text.contains("has=none"), "the shell: {text}");
    assert!(!text.contains(SECRET), "{text}");
}
