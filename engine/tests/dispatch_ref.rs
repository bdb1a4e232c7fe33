//! A dispatch through the API (what `plue trigger` calls) without a ref, and one whose
//! repository cannot be fetched (issue 54):
//! - right after registration, before the background read of the default branch has
//!   recorded it, a dispatch without a ref ran on `HEAD` itself (recorded as the branch
//!   `HEAD`); it runs on the default branch, learnt from the remote's `HEAD` and recorded;
//! - a repository that cannot be fetched answered 502 "the engine's log says why" while
//!   that log said nothing at its default level; the answer gives git's reason, without
//!   the clone URL's credentials, and the engine's log at its default level says it too;
//! - that answer was a 502, a server error for a fault of the repository as registered
//!   (schemathesis counted it as one): it is a 409.

use plue_store::NewRepo;
use serde_json::json;

use crate::support;

const ADMIN: &str = "admin-token-of-the-dispatch-ref-tests";

const CI: &str = r#"
def workflow(ctx):
    return Plan("CI", triggers=[Trigger.manual()], steps=[Step.bash("hello", "echo hi")])
"#;

fn repo<'a>(name: &'a str, clone_url: &'a str, default_branch: Option<&'a str>) -> NewRepo<'a> {
    NewRepo {
        name,
        clone_url,
        forge: "github",
        webhook_secret_sealed: "plain:s",
        api_url: None,
        api_token_sealed: None,
        default_branch,
        forge_repo_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_without_a_ref_runs_on_the_default_branch_and_a_409_says_why() {
    let config = support::admin_config("dispatch-ref-registration", ADMIN);
    let h = support::RepoEngine::launch("dispatch-ref", config, true).await;
    let store = h.store();

    // A repository whose default branch is `trunk`, registered without it.
    let origin = h.sandbox.path("origin");
    std::fs::create_dir_all(origin.join(".plue")).unwrap();
    std::fs::write(origin.join(".plue/ci.plue.py"), CI).unwrap();
    let sha = support::git_sh(
        &origin,
        "git init -q -b trunk . && git add -A && git commit -qm one && git rev-parse HEAD",
    );
    store
        .create_repo(&repo("octo/trunk", origin.to_str().unwrap(), None))
        .await
        .unwrap()
        .unwrap();
    let created = h
        .call_ok(
            ADMIN,
            "POST",
            "/api/repos/octo/trunk/dispatch",
            Some(json!({"workflow": "ci"})),
            201,
        )
        .await;
    let run = store
        .run(created["run_id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.git_ref.as_str(), run.sha.as_str()),
        ("refs/heads/trunk", sha.as_str())
    );
    let recorded = store.repo_by_name("octo/trunk").await.unwrap().unwrap();
    assert_eq!(recorded.default_branch.as_deref(), Some("trunk"));

    // A repository that cannot be fetched: the answer says why, in git's words, and
    // never the credentials of its clone URL.
    let down = "http://bot:s3cr3t@127.0.0.1:1/octo/down.git";
    for (name, branch, reading) in [
        ("octo/down", Some("main"), "to read 'main'"),
        ("octo/new-down", None, "to learn its default branch"),
    ] {
        store
            .create_repo(&repo(name, down, branch))
            .await
            .unwrap()
            .unwrap();
        let (status, answer) = h
            .call(
                ADMIN,
                "POST",
                &format!("/api/repos/{name}/dispatch"),
                Some(json!({"workflow": "ci"})),
            )
            .await;
        assert_eq!(status, 409, "{name}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!(
                "{name} could not be fetched from its forge {reading}: "
            )),
            "{name}: {answer}"
        );
        assert!(message.contains("127.0.0.1"), "{name}: {answer}");
        assert!(!message.contains("engine's log"), "{name}: {answer}");
        assert!(!answer.to_string().contains("s3cr3t"), "{name}: {answer}");
        let repo = store.repo_by_name(name).await.unwrap().unwrap();
        assert_eq!(repo.default_branch.as_deref(), branch, "nothing learnt");
    }
    h.engine.shutdown().await;
}

/// The engine's log, as `plue serve` writes it at its default level (`PLUE_LOG` unset).
fn engine_log(sandbox: &support::Sandbox) -> String {
    // Each start of `plue serve` (`engine-1`, a retried `engine-2`, ...) has its own file.
    (1..=5)
        .filter_map(|n| std::fs::read_to_string(sandbox.path(&format!("engine-{n}.err"))).ok())
        .collect()
}

// Issue 54 item 5, against the real binary: the answer says why, and so does the log at
// its default level — a `warn` line naming the repository, with the answer's reason and
// never the clone URL's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_cannot_be_fetched_is_a_409_and_the_default_log_says_why() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("dispatch-ref-log");
    let data = sandbox.path("data");
    let engine = sandbox
        .serve_engine(&["--data-dir", data.to_str().unwrap(), "--runners", "0"])
        .await;
    let client = support::client();
    let down = "http://bot:s3cr3t@127.0.0.1:1/octo/down.git";
    for (name, branch, reading) in [
        ("octo/down", Some("main"), "to read 'main'"),
        ("octo/new-down", None, "to learn its default branch"),
    ] {
        let mut repo = json!({
            "name": name, "clone_url": down, "forge": "github",
            "webhook_secret": "webhook-secret-of-down",
        });
        if let Some(branch) = branch {
            repo["default_branch"] = branch.into();
        }
        let registered = client
            .post(format!("{}/api/repos", engine.url))
            .json(&repo)
            .send()
            .await
            .expect("POST /api/repos");
        assert_eq!(registered.status(), 201, "{name}");
        let answer = client
            .post(format!("{}/api/repos/{name}/dispatch", engine.url))
            .json(&json!({"workflow": "ci"}))
            .send()
            .await
            .expect("POST dispatch");
        assert_eq!(answer.status(), 409, "{name}");
        let answer: serde_json::Value = answer.json().await.expect("a JSON error");
        let message = answer["error"].as_str().unwrap_or_default();
        let prefix = format!("{name} could not be fetched from its forge {reading}: ");
        let reason = message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{name}: {answer}"));
        assert!(reason.contains("127.0.0.1"), "{name}: {answer}");
        assert!(!message.contains("s3cr3t"), "{name}: {answer}");

        // Written before the answer; a moment for stderr to reach its file.
        let logged = |log: &str| {
            log.lines()
                .any(|l| l.contains(" WARN ") && l.contains(name) && l.contains(reason))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !logged(&engine_log(&sandbox)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let log = engine_log(&sandbox);
        assert!(
            logged(&log),
            "no WARN line for {name} with {reason:?}:\n{log}"
        );
    }
    assert!(
        !engine_log(&sandbox).contains("s3cr3t"),
        "{}",
        engine_log(&sandbox)
    );
}
