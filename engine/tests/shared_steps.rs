//! Steps shared across repositories, end to end with the real binary: a workflow of one
//! local git repository `use`s a module of another (`--modules-from` a directory of
//! repositories) by commit, by tag with and without the lock file `plue lock` writes, and
//! unpinned; wrong parameters, a module reaching for the network, files or a secret it
//! was not given are refused with their message. And `plue serve`: a registered
//! repository's module beside it on its forge (the fake GitHub), run by a push.

use crate::support;
use std::path::{Path, PathBuf};

use crate::support::{git_repo, git_sh, printed, Sandbox};

const RUST_V1: &str = r#"
def cargo_test(features: list[str] = [], token: str | None = None):
    """cargo test with FEATURES."""
    flags = " ".join(["--features=" + f for f in features])
    secrets = [token] if token else []
    return Step.bash("cargo-test", "echo module-v1 " + flags, secrets=secrets)
"#;

const RUST_V2: &str = r#"
def cargo_test(features: list[str] = [], token: str | None = None):
    return Step.bash("cargo-test", "echo module-v2")
"#;

/// The module repository `repos/acme/plue-steps`: `rust.plue.py` at v1 (tagged `v1`), then
/// at v2 on `main`. Returns (the repositories' directory, v1's commit, v2's commit).
fn module_repository(sandbox: &Sandbox) -> (PathBuf, String, String) {
    let repos = sandbox.path("repos");
    let dir = repos.join("acme/plue-steps");
    let v1 = git_repo(&dir, &[("rust.plue.py", RUST_V1)]);
    git_sh(&dir, "git tag v1");
    std::fs::write(dir.join("rust.plue.py"), RUST_V2).unwrap();
    let v2 = git_sh(&dir, "git commit -qam v2 && git rev-parse HEAD");
    (repos, v1, v2)
}

/// The calling repository `app`, its workflow `.plue/ci.plue.py` using the module as
/// `uses` spells it and calling `call`. Returns the workflow's path.
fn calling_repository(sandbox: &Sandbox, uses: &str, call: &str) -> PathBuf {
    let app = sandbox.path("app");
    if app.exists() {
        std::fs::remove_dir_all(&app).unwrap();
    }
    let workflow =
        format!("steps = {uses}\n\ndef workflow(ctx):\n    return Plan(\"ci\", steps=[{call}])\n");
    git_repo(&app, &[(".plue/ci.plue.py", &workflow)]);
    app.join(".plue/ci.plue.py")
}

fn plue(sandbox: &Sandbox, repos: &Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--modules-from", repos.to_str().unwrap()]);
    sandbox.plue(&all).output().expect("plue runs")
}

fn refused(sandbox: &Sandbox, repos: &Path, workflow: &Path, expected: &str) {
    let output = plue(sandbox, repos, &["check", workflow.to_str().unwrap()]);
    let text = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
}

#[test]
fn a_module_pinned_by_commit_runs_and_is_recorded_in_the_plan() {
    let sandbox = Sandbox::new("shared-steps-commit");
    let (repos, v1, _) = module_repository(&sandbox);
    let workflow = calling_repository(
        &sandbox,
        &format!("use(\"acme/plue-steps\", \"rust.plue.py\", commit=\"{v1}\")"),
        "steps.cargo_test(features=[\"x\"])",
    );
    let path = workflow.to_str().unwrap();
    let eval = plue(&sandbox, &repos, &["eval", path]);
    let plan: serde_json::Value =
        serde_json::from_slice(&eval.stdout).unwrap_or_else(|_| panic!("{}", printed(&eval)));
    assert_eq!(
        plan["modules"],
        serde_json::json!([{"repository": "acme/plue-steps", "path": "rust.plue.py", "commit": v1}])
    );
    let run = plue(
        &sandbox,
        &repos,
        &["run", path, "--runners", "1", "--data-dir", "data"],
    );
    let text = printed(&run);
    assert!(run.status.success(), "{text}");
    assert!(text.contains("module-v1 --features=x"), "{text}");
}

#[test]
fn a_tag_is_used_only_as_the_lock_file_pins_it() {
    let sandbox = Sandbox::new("shared-steps-tag");
    let (repos, v1, v2) = module_repository(&sandbox);
    let workflow = calling_repository(
        &sandbox,
        "use(\"acme/plue-steps\", \"rust.plue.py\", ref=\"v1\")",
        "steps.cargo_test()",
    );
    refused(
        &sandbox,
        &repos,
        &workflow,
        "use(\"acme/plue-steps\", \"rust.plue.py\", ref=\"v1\"): not in .plue/lock.json — run 'plue lock' to pin it",
    );
    let app = sandbox.path("app");
    let lock = plue(&sandbox, &repos, &["lock", app.to_str().unwrap()]);
    assert!(lock.status.success(), "{}", printed(&lock));
    let written = std::fs::read_to_string(app.join(".plue/lock.json")).unwrap();
    let written: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"version": 1, "modules": [
            {"repository": "acme/plue-steps", "path": "rust.plue.py", "ref": "v1", "commit": v1}
        ]})
    );
    // The tag moves on; the lock file keeps the workflow on the commit it pinned.
    git_sh(&repos.join("acme/plue-steps"), "git tag -f v1 HEAD");
    let path = workflow.to_str().unwrap();
    let eval = plue(&sandbox, &repos, &["eval", path]);
    let plan: serde_json::Value =
        serde_json::from_slice(&eval.stdout).unwrap_or_else(|_| panic!("{}", printed(&eval)));
    assert_eq!(plan["modules"][0]["commit"], v1.as_str());
    assert_eq!(plan["modules"][0]["ref"], "v1");
    assert_eq!(plan["steps"][0]["command"], "echo module-v1 ");
    // `plue lock` again moves the pin, and the plan with it.
    let relock = plue(&sandbox, &repos, &["lock", app.to_str().unwrap()]);
    assert!(relock.status.success(), "{}", printed(&relock));
    let eval = plue(&sandbox, &repos, &["eval", path]);
    let plan: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(plan["modules"][0]["commit"], v2.as_str());
}

#[test]
fn unpinned_uses_and_wrong_parameters_are_refused_with_their_message() {
    let sandbox = Sandbox::new("shared-steps-refused");
    let (repos, v1, _) = module_repository(&sandbox);
    let workflow = calling_repository(
        &sandbox,
        "use(\"acme/plue-steps\", \"rust.plue.py\")",
        "steps.cargo_test()",
    );
    refused(&sandbox, &repos, &workflow, "unpinned: pin it with commit=");
    let workflow = calling_repository(
        &sandbox,
        "use(\"acme/plue-steps\", \"rust.plue.py\", commit=\"main\")",
        "steps.cargo_test()",
    );
    refused(&sandbox, &repos, &workflow, "is not a full commit");
    let by_commit = format!("use(\"acme/plue-steps\", \"rust.plue.py\", commit=\"{v1}\")");
    let workflow = calling_repository(&sandbox, &by_commit, "steps.cargo_test(features=\"x\")");
    refused(
        &sandbox,
        &repos,
        &workflow,
        &format!(
            "ci.plue.py:4:30: TypeError: acme/plue-steps/rust.plue.py@{}: cargo_test(): parameter 'features' must be list[str], got str",
            &v1[..12]
        ),
    );
    let workflow = calling_repository(&sandbox, &by_commit, "steps.cargo_test(feature=[])");
    refused(
        &sandbox,
        &repos,
        &workflow,
        "cargo_test() has no parameter 'feature' (it takes: features, token)",
    );
    let workflow = calling_repository(
        &sandbox,
        &format!("use(\"acme/plue-steps\", \"go.plue.py\", commit=\"{v1}\")"),
        "steps.cargo_test()",
    );
    refused(&sandbox, &repos, &workflow, "has no file go.plue.py");
}

#[test]
fn a_module_finds_no_network_no_file_and_no_secret_it_was_not_given() {
    let sandbox = Sandbox::new("shared-steps-escape");
    let repos = sandbox.path("repos");
    let hostile = [
        (
            "net.plue.py",
            "import socket\ndef f(x: str):\n    return Step.bash(\"a\", x)\n",
            "import of 'socket' is not allowed",
        ),
        (
            "file.plue.py",
            "def f(x: str):\n    return Step.bash(\"a\", open(\"/etc/passwd\").read())\n",
            "use of forbidden name 'open'",
        ),
        (
            "dunder.plue.py",
            "def f(x: str):\n    return Step.bash(\"a\", str(().__class__.__base__.__subclasses__()))\n",
            "is not allowed in workflow files",
        ),
        (
            "secret.plue.py",
            "def f(x: str):\n    return Step.bash(\"publish\", \"npm publish\", secrets=[\"NPM_TOKEN\"])\n",
            "f() built step 'publish' naming secret 'NPM_TOKEN', which the caller did not pass",
        ),
        (
            "environment.plue.py",
            "def f(x: str):\n    return Step.bash(\"deploy\", \"./deploy\", environment=\"production\")\n",
            "in environment 'production', which the caller did not pass",
        ),
        (
            "nested.plue.py",
            "more = use(\"acme/plue-steps\", \"rust.plue.py\", ref=\"v1\")\ndef f(x: str):\n    return Step.bash(\"a\", x)\n",
            "a used module may not use another module",
        ),
    ];
    let files: Vec<(&str, &str)> = hostile.iter().map(|(p, s, _)| (*p, *s)).collect();
    let commit = git_repo(&repos.join("acme/evil"), &files);
    for (path, _, expected) in hostile {
        let workflow = calling_repository(
            &sandbox,
            &format!("use(\"acme/evil\", \"{path}\", commit=\"{commit}\")"),
            "steps.f(\"x\")",
        );
        refused(&sandbox, &repos, &workflow, expected);
    }
    // Passed in by the caller, a secret's name is the caller's choice.
    let passing =
        "def f(token: str):\n    return Step.bash(\"publish\", \"npm publish\", secrets=[token])\n";
    let dir = repos.join("acme/evil");
    std::fs::write(dir.join("secret.plue.py"), passing).unwrap();
    let passing = git_sh(&dir, "git commit -qam pass && git rev-parse HEAD");
    let workflow = calling_repository(
        &sandbox,
        &format!("use(\"acme/evil\", \"secret.plue.py\", commit=\"{passing}\")"),
        "steps.f(\"NPM_TOKEN\")",
    );
    let output = plue(&sandbox, &repos, &["check", workflow.to_str().unwrap()]);
    assert!(output.status.success(), "{}", printed(&output));
}

/// `plue serve`: a registered repository's workflow uses a module of a repository beside
/// it on its forge (testkit's fake GitHub), pinned by commit; a push runs the module's step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_repository_uses_a_module_beside_it_on_its_forge() {
    use std::time::Duration;
    use testkit::forge::{FakeForge, Flavor};
    const SECRET: &str = "webhook-secret-of-the-shared-steps-test";
    let sandbox = Sandbox::new("shared-steps-serve");
    let forge = FakeForge::start(Flavor::GitHub, "token-of-the-shared-steps-test").unwrap();
    let steps = forge
        .create_repo_with("acme/plue-steps", &[("rust.plue.py", RUST_V1)])
        .unwrap();
    let ci = format!(
        "steps = use(\"acme/plue-steps\", \"rust.plue.py\", commit=\"{steps}\")\n\n\
         def workflow(ctx):\n    return Plan(\"ci\", triggers=[Trigger.on_push()], \
         steps=[steps.cargo_test(features=[\"served\"])])\n"
    );
    let app = forge
        .create_repo_with("acme/app", &[(".plue/ci.plue.py", &ci)])
        .unwrap();
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    let http = support::client();
    let registered = http
        .post(format!("{}/api/repos", engine.url))
        .json(&serde_json::json!({
            "name": "acme/app",
            "clone_url": forge.clone_url("acme/app"),
            "forge": "github",
            "webhook_secret": SECRET,
            "api_url": forge.api_url(),
            "api_token": "token-of-the-shared-steps-test",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        201,
        "{}",
        registered.text().await.unwrap()
    );
    let mut payload = support::webhook_fixture("github/push-new-branch.json");
    payload["repository"]["full_name"] = serde_json::json!("acme/app");
    payload["repository"]["default_branch"] = serde_json::json!("main");
    payload["ref"] = serde_json::json!("refs/heads/main");
    payload["after"] = serde_json::json!(app);
    let (status, answer) =
        support::deliver_webhook(&engine.url, "github", "push", "push-1", &payload, SECRET).await;
    assert_eq!(status, 200, "{answer}");
    let runs = support::run_ids(&answer);
    assert_eq!(runs.len(), 1, "{answer}");
    support::wait_succeeded(&http, &engine.url, runs[0], Duration::from_secs(120)).await;
    let lines = support::log_lines(&http, &engine.url, runs[0], "cargo-test")
        .await
        .expect("the step's log");
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("module-v1 --features=served")),
        "{lines:?}"
    );
}
