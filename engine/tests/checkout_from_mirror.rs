//! A step's checkout from the engine's mirror (`GET /internal/attempts/{id}/checkout`):
//! - played as the attacker with scripted runners: no token, another runner's token, an
//!   ended attempt, a run of no repository, a commit the mirror does not hold and a
//!   checkout from another URL than the repository's (a fork's) each get nothing of the
//!   mirror (and the engine fetches nothing for a runner); the holder gets exactly its
//!   commit, without history;
//! - with a real `plue runner`: a step checks its commit out with the forge gone (the pack
//!   came from the engine), and when the engine serves none (a commit it never fetched)
//!   the runner fetches from the forge as before — the same repository either way.

use std::path::Path;
use std::time::Duration;

use evaluator::plan::{Plan, Step};
use plue_store::{NewRepo, NewRun, RunRepo};
use plue_types::protocol as wire;
use plue_types::status::RunState;
use serde_json::{json, Value};

use crate::support::{self, RepoEngine, ADMIN_TOKEN, RUNNER_TOKEN};

/// The step: the commit it sits on, how many commits its history holds, how many files
/// `git status` finds changed, the README, and which way the commit came.
const LOOK: &str = "git rev-parse HEAD; git rev-list --count HEAD; \
     git status --porcelain | wc -l; cat README; \
     if test -e .git/FETCH_HEAD; then echo fetched; else echo packed; fi";

fn workflow() -> String {
    format!(
        "def workflow(ctx):\n    return Plan('CI', triggers=[Trigger.manual()], \
         steps=[Step.bash('look', {LOOK:?})])\n"
    )
}

/// A repository `octo/app` whose origin is a local repository of two commits (the
/// workflow's own is the second): the engine and the origin's path and head.
async fn engine_with_origin(name: &str) -> (RepoEngine, std::path::PathBuf, String) {
    engine_serving(name, true).await
}

/// [`engine_with_origin`] with `serving` as the engine's `checkouts_from_mirror`.
async fn engine_serving(name: &str, serving: bool) -> (RepoEngine, std::path::PathBuf, String) {
    let mut config = support::engine_config(RUNNER_TOKEN, ADMIN_TOKEN, "checkout-from-mirror-key");
    config.checkouts_from_mirror = serving;
    let h = RepoEngine::launch(name, config, true).await;
    let origin = h.sandbox.path("origin");
    std::fs::create_dir_all(origin.join(".plue")).unwrap();
    std::fs::write(origin.join("README"), "first\n").unwrap();
    support::git_sh(
        &origin,
        "git init -q -b main . && git add -A && git commit -qm one",
    );
    std::fs::write(origin.join("README"), "second\n").unwrap();
    std::fs::write(origin.join(".plue/ci.plue.py"), workflow()).unwrap();
    let sha = support::git_sh(
        &origin,
        "git add -A && git commit -qm two && git rev-parse HEAD",
    );
    h.store()
        .create_repo(&NewRepo {
            clone_url: origin.to_str().unwrap(),
            default_branch: Some("main"),
            ..plue_store::testing::repo("octo/app")
        })
        .await
        .unwrap()
        .unwrap();
    (h, origin, sha)
}

/// Dispatches the workflow (the engine fetches the commit into its mirror): the run's id.
async fn dispatch(h: &RepoEngine) -> i64 {
    let created = h
        .call_ok(
            ADMIN_TOKEN,
            "POST",
            "/api/repos/octo/app/dispatch",
            Some(json!({"workflow": "ci"})),
            201,
        )
        .await;
    created["run_id"].as_i64().unwrap()
}

/// Where the engine keeps `octo/app`'s mirror.
async fn mirror_of(h: &RepoEngine) -> std::path::PathBuf {
    let repo = h.store().repo_by_name("octo/app").await.unwrap().unwrap();
    h.sandbox.path(&format!("mirrors/{}.git", repo.id))
}

/// Starts a run of `octo/app` checking `sha` out from `origin` without the registry:
/// nothing fetched it into the mirror. `of_repo: false`: a run of no repository.
async fn run_at(h: &RepoEngine, origin: &Path, sha: &str, of_repo: bool) -> i64 {
    let repo = h.store().repo_by_name("octo/app").await.unwrap().unwrap();
    let plan = Plan::new("CI", vec![Step::bash("look", LOOK)]);
    let json = serde_json::to_string(&plan).unwrap();
    let workspace = wire::WorkspaceSource::Git {
        url: origin.to_str().unwrap().into(),
        sha: sha.into(),
        credential: None,
    };
    h.engine
        .executor
        .start_run(&NewRun {
            workspace: &workspace,
            repo: of_repo.then_some(RunRepo {
                repo_id: repo.id,
                secrets_allowed: false,
            }),
            ..plue_store::testing::local_run(&plan, &json)
        })
        .await
        .unwrap()
}

async fn poll(h: &RepoEngine, token: &str) -> wire::Assignment {
    let url = format!("{}{}", h.engine.url, wire::POLL);
    let answer: wire::PollResponse =
        support::post_json(&h.http, &url, token, &json!({"wait_ms": 5000})).await;
    answer.assignment.expect("an assignment")
}

async fn get_checkout(h: &RepoEngine, token: Option<&str>, attempt: i64) -> reqwest::Response {
    let mut request = h
        .http
        .get(format!("{}{}", h.engine.url, wire::checkout_path(attempt)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn git_in(dir: &Path, args: &str) -> String {
    support::git_sh(dir, &format!("git {args}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_gets_its_commit_and_nothing_more_of_the_mirror() {
    let (h, origin, sha) = engine_with_origin("checkout-attacks").await;
    let run_id = dispatch(&h).await;
    let holder = support::register_runner(&h.http, &h.engine.url, RUNNER_TOKEN, "holder").await;
    let other = support::register_runner(&h.http, &h.engine.url, RUNNER_TOKEN, "other").await;
    let assignment = poll(&h, &holder).await;
    let wire::WorkspaceSource::Git { sha: assigned, .. } = &assignment.workspace else {
        panic!("a checkout: {:?}", assignment.workspace);
    };
    assert_eq!(assigned, &sha);
    let attempt = assignment.attempt_id;

    // No token, a token of no runner, another runner's: nothing.
    for (token, status) in [
        (None, 401),
        (Some("not-a-token"), 401),
        (Some(other.as_str()), 403),
    ] {
        let refused = get_checkout(&h, token, attempt).await;
        assert_eq!(refused.status(), status, "{token:?}");
        let body = refused.text().await.unwrap();
        assert!(!body.starts_with("PACK"), "{token:?}: {body}");
    }
    // Not an attempt id: refused before anything is read.
    let odd = h
        .http
        .get(format!(
            "{}/internal/attempts/..%2F1/checkout",
            h.engine.url
        ))
        .bearer_auth(&holder)
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 400);

    // The holder: its commit and tree, no history — the repository a fetch of depth 1
    // makes, with the commit checked out and nothing changed.
    let served = get_checkout(&h, Some(&holder), attempt).await;
    assert_eq!(served.status(), 200);
    let pack = served.bytes().await.unwrap();
    assert!(pack.starts_with(b"PACK"));
    let workspace = tempfile::tempdir().unwrap();
    runner::workspace::checkout_pack(&pack[..], &sha, workspace.path())
        .await
        .unwrap();
    assert_eq!(git_in(workspace.path(), "rev-parse HEAD"), sha);
    assert_eq!(git_in(workspace.path(), "rev-list --count HEAD"), "1");
    assert_eq!(git_in(workspace.path(), "status --porcelain"), "");
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("README")).unwrap(),
        "second\n"
    );
    // Only the objects of that one commit: the first README's blob is not in the pack.
    let first_readme = support::git_sh(&origin, "git rev-parse HEAD~1:README");
    let missing = std::process::Command::new("git")
        .args(["cat-file", "-e", &first_readme])
        .current_dir(workspace.path())
        .status()
        .unwrap();
    assert!(!missing.success(), "the parent's objects came along");
    // The pack is no checkout of another commit: asked for another one, it fails.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_sha = support::git_sh(&origin, "git rev-parse HEAD~1");
    let wrong = runner::workspace::checkout_pack(&pack[..], &other_sha, elsewhere.path()).await;
    assert!(wrong.is_err(), "checked out a commit the pack lacks");
    // Garbage is no pack.
    let junk = tempfile::tempdir().unwrap();
    let junked = runner::workspace::checkout_pack(&b"PACKnot a pack"[..], &sha, junk.path()).await;
    assert!(junked.is_err());

    // Once the attempt ended, nothing more.
    let done: Value = support::post_json(
        &h.http,
        &format!("{}{}", h.engine.url, wire::complete_path(attempt)),
        &holder,
        &json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 0}),
    )
    .await;
    assert!(done.is_object(), "{done}");
    assert_eq!(get_checkout(&h, Some(&holder), attempt).await.status(), 409);
    h.wait_run(run_id, Duration::from_secs(10)).await;

    // A commit the mirror does not hold, a run of no repository, and a checkout from
    // another URL than the repository's (a fork's pull request: the mirror holds the
    // commit, but the runner fetches it from where its step says): 404 (the runner then
    // fetches from the forge), and the engine fetched nothing on the runner's behalf.
    std::fs::write(origin.join("README"), "third\n").unwrap();
    let unfetched = support::git_sh(&origin, "git commit -qam three && git rev-parse HEAD");
    let fork = h.sandbox.path("fork");
    for (name, from, at, of_repo, why) in [
        (
            "unfetched",
            &origin,
            &unfetched,
            true,
            "the mirror does not hold the commit",
        ),
        (
            "no-repo",
            &origin,
            &unfetched,
            false,
            "the run is of no repository",
        ),
        (
            "fork",
            &fork,
            &sha,
            true,
            "not from the repository's own URL",
        ),
    ] {
        let run = run_at(&h, from, at, of_repo).await;
        let next = support::register_runner(&h.http, &h.engine.url, RUNNER_TOKEN, name).await;
        let assignment = poll(&h, &next).await;
        assert_eq!(assignment.run_id, run);
        let absent = get_checkout(&h, Some(&next), assignment.attempt_id).await;
        assert_eq!(absent.status(), 404, "{why}");
        let said: Value = absent.json().await.unwrap();
        let said = said["error"].as_str().unwrap();
        assert!(said.starts_with("not served by the engine: "), "{said}");
        assert!(said.contains(why), "{said}");
    }
    let fetched = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{unfetched}^{{commit}}")])
        .current_dir(mirror_of(&h).await)
        .status()
        .unwrap();
    assert!(
        !fetched.success(),
        "the engine fetched a commit for a runner"
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_told_to_leave_checkouts_to_the_forge_serves_none() {
    let (h, _origin, _sha) = engine_serving("checkout-off", false).await;
    dispatch(&h).await;
    let runner = support::register_runner(&h.http, &h.engine.url, RUNNER_TOKEN, "r").await;
    let assignment = poll(&h, &runner).await;
    let answer = get_checkout(&h, Some(&runner), assignment.attempt_id).await;
    assert_eq!(answer.status(), 404);
    let said: Value = answer.json().await.unwrap();
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("--checkouts-from-forge"),
        "{said}"
    );
    h.engine.shutdown().await;
}

/// The lines step `look` of run `run_id` printed.
async fn printed(h: &RepoEngine, run_id: i64) -> Vec<String> {
    let step = h.store().step_run(run_id, "look").await.unwrap().unwrap();
    h.store()
        .read_logs(step.id, (0, 0), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|line| line.text)
        .collect()
}

async fn wait_succeeded(h: &RepoEngine, run_id: i64) {
    h.wait_run(run_id, Duration::from_secs(60)).await;
    let run = h.store().run(run_id).await.unwrap().unwrap();
    assert_eq!(
        run.status,
        RunState::Succeeded,
        "{:?}: {:?}",
        run.reason,
        printed(h, run_id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_checks_out_from_the_engine_and_from_the_forge_when_the_engine_serves_none() {
    let _serial = support::serial().await;
    let (h, origin, sha) = engine_with_origin("checkout-runner").await;

    // The engine serves none (a commit it never fetched): fetched from the forge, as
    // before.
    let fetched = run_at(&h, &origin, &sha, true).await;
    let first = h.sandbox.runner("first", &h.engine.url, &["--ephemeral"]);
    wait_succeeded(&h, fetched).await;
    assert_eq!(
        printed(&h, fetched).await,
        [sha.as_str(), "1", "0", "second", "fetched"]
    );
    h.sandbox.wait_exit(first, Duration::from_secs(30)).await;

    // The forge gone once the engine has the commit: the runner still checks it out, from
    // the engine's mirror, the same repository.
    let packed = dispatch(&h).await;
    std::fs::rename(&origin, h.sandbox.path("origin-gone")).unwrap();
    h.sandbox.runner("second", &h.engine.url, &["--ephemeral"]);
    wait_succeeded(&h, packed).await;
    assert_eq!(
        printed(&h, packed).await,
        [sha.as_str(), "1", "0", "second", "packed"]
    );
    h.engine.shutdown().await;
}
