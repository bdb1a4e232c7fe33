//! A pull request's head repository URL comes from the payload, and the engine fetches it
//! when the head is not in the repository itself. Played by the attacker who holds a
//! repository's webhook secret (whoever set up its webhook on the forge): a payload whose
//! fork URL is a path on the engine's host — another repository's mirror — or another
//! host made the engine fetch from there, so a run of the attacker's repository could
//! check out another repository's private commit. The fork is fetched only from the
//! repository's own forge — the fork of the payload's `owner/name` beside it, never the
//! payload's URL itself — so each place here is the attacker's own unreachable forge, and
//! starts nothing and fetches nothing.

use plue_store::NewRepo;
use serde_json::json;

use crate::support::{self, RepoEngine, ADMIN_TOKEN, RUNNER_TOKEN};

const CI: &str = "def workflow(ctx):\n    return Plan('CI', triggers=[Trigger.manual(), \
                  Trigger.on_pull_request()], steps=[Step.bash('look', 'cat SECRET')])\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_url_elsewhere_than_the_repositorys_forge_is_never_fetched() {
    let config = support::engine_config(RUNNER_TOKEN, ADMIN_TOKEN, "fork-urls-vault-key");
    let h = RepoEngine::launch("fork-urls", config, true).await;
    let store = h.store();

    // The victim: a private repository whose commit the engine's mirror holds.
    let victim = h.sandbox.path("victim");
    std::fs::create_dir_all(victim.join(".plue")).unwrap();
    std::fs::write(victim.join(".plue/ci.plue.py"), CI).unwrap();
    std::fs::write(victim.join("SECRET"), "the victim's code\n").unwrap();
    let secret_sha = support::git_sh(
        &victim,
        "git init -q -b main . && git add -A && git commit -qm one && git rev-parse HEAD",
    );
    let victim_id = store
        .create_repo(&NewRepo {
            clone_url: victim.to_str().unwrap(),
            ..plue_store::testing::repo("octo/secret")
        })
        .await
        .unwrap()
        .unwrap()
        .id;
    h.call_ok(
        ADMIN_TOKEN,
        "POST",
        "/api/repos/octo/secret/dispatch",
        Some(json!({"workflow": "ci"})),
        201,
    )
    .await;
    let victim_mirror = h.sandbox.path(&format!("mirrors/{victim_id}.git"));
    assert!(victim_mirror.join("HEAD").exists());

    // The attacker's repository, on an https forge the engine cannot reach for the head.
    let attacker_id = store
        .create_repo(&NewRepo {
            clone_url: "https://127.0.0.1:1/mallory/app.git",
            forge: "github",
            ..plue_store::testing::repo("mallory/app")
        })
        .await
        .unwrap()
        .unwrap()
        .id;
    let places = [
        victim_mirror.to_str().unwrap().to_string(),
        format!("file://{}", victim_mirror.display()),
        format!("{}/../{victim_id}.git", victim_mirror.display()),
        "https://10.0.0.1/mallory/app.git".to_string(),
        "http://127.0.0.1:1/mallory/app.git".to_string(),
        "ssh://127.0.0.1/mallory/app.git".to_string(),
        "git@127.0.0.1:mallory/app.git".to_string(),
        format!("https://127.0.0.1:1\\@{}", victim_mirror.display()),
        format!("ssh://x%2F@127.0.0.1{}", victim_mirror.display()),
    ];
    for (n, place) in places.iter().enumerate() {
        let mut payload = support::webhook_fixture("github/pull_request-opened.json");
        payload["repository"]["full_name"] = json!("mallory/app");
        let pr = &mut payload["pull_request"];
        pr["number"] = json!(40 + n);
        pr["head"]["sha"] = json!(secret_sha);
        pr["base"]["sha"] = json!(secret_sha);
        pr["base"]["ref"] = json!("main");
        pr["head"]["repo"]["full_name"] = json!("mallory/fork");
        pr["head"]["repo"]["clone_url"] = json!(place);
        payload["number"] = json!(40 + n);
        let (status, answer) = support::deliver_webhook(
            &h.engine.url,
            "github",
            "pull_request",
            &format!("fork-url-{n}"),
            &payload,
            "s",
        )
        .await;
        let runs = answer["runs"].as_array().map_or(0, Vec::len);
        assert_eq!(runs, 0, "{place}: {status} {answer}");
        let said = answer.to_string();
        assert_eq!(status, 422, "{place}: {said}");
        assert!(!said.contains("the victim's code"), "{place}: {said}");
    }
    // A repository at a local path fetches its forks beside it: never one of the engine's
    // mirrors, which a fork named `mirrors/<id>` beside a repository two levels under the
    // mirrors' parent would be.
    let local_id = store
        .create_repo(&NewRepo {
            clone_url: h.sandbox.path("x/app").to_str().unwrap(),
            forge: "github",
            ..plue_store::testing::repo("mallory/local")
        })
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut payload = support::webhook_fixture("github/pull_request-opened.json");
    payload["repository"]["full_name"] = json!("mallory/local");
    payload["number"] = json!(60);
    let pr = &mut payload["pull_request"];
    pr["number"] = json!(60);
    pr["head"]["sha"] = json!(secret_sha);
    pr["base"]["sha"] = json!(secret_sha);
    pr["base"]["ref"] = json!("main");
    pr["head"]["repo"]["clone_url"] = json!(format!("https://x/mirrors/{victim_id}.git"));
    let (status, answer) = support::deliver_webhook(
        &h.engine.url,
        "github",
        "pull_request",
        "fork-url-local",
        &payload,
        "s",
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let local_mirror = h.sandbox.path(&format!("mirrors/{local_id}.git"));
    let fetched = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{secret_sha}^{{commit}}")])
        .current_dir(&local_mirror)
        .status()
        .unwrap();
    assert!(!fetched.success(), "a mirror was fetched as a fork");

    // Nothing of the victim's reached the attacker's mirror.
    let mirror = h.sandbox.path(&format!("mirrors/{attacker_id}.git"));
    let fetched = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{secret_sha}^{{commit}}")])
        .current_dir(&mirror)
        .status()
        .unwrap();
    assert!(!fetched.success(), "the victim's commit was fetched");
    let runs = store.list_runs_of_repo("mallory/app", 10).await.unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    h.engine.shutdown().await;
}
