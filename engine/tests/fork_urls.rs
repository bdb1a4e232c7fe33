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

/// Registers the GitHub repository `name` cloned from `clone_url`; its id.
async fn register(h: &RepoEngine, name: &str, clone_url: &str) -> i64 {
    h.store()
        .create_repo(&NewRepo {
            clone_url,
            forge: "github",
            ..plue_store::testing::repo(name)
        })
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Delivers pull request `number` of `repo` whose head is `sha` in the fork at
/// `fork_url` (as the payload says), signed with the repository's secret; the status and
/// the answer.
async fn deliver(
    h: &RepoEngine,
    repo: &str,
    number: usize,
    sha: &str,
    fork_url: &str,
) -> (u16, serde_json::Value) {
    let mut payload = support::webhook_fixture("github/pull_request-opened.json");
    payload["repository"]["full_name"] = json!(repo);
    payload["number"] = json!(number);
    let pr = &mut payload["pull_request"];
    pr["number"] = json!(number);
    pr["head"]["sha"] = json!(sha);
    pr["base"]["sha"] = json!(sha);
    pr["base"]["ref"] = json!("main");
    pr["head"]["repo"]["full_name"] = json!("mallory/fork");
    pr["head"]["repo"]["clone_url"] = json!(fork_url);
    let id = format!("fork-url-{number}");
    support::deliver_webhook(&h.engine.url, "github", "pull_request", &id, &payload, "s").await
}

/// Whether repository `repo_id`'s mirror holds commit `sha`.
fn mirror_holds(h: &RepoEngine, repo_id: i64, sha: &str) -> bool {
    std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .current_dir(h.sandbox.path(&format!("mirrors/{repo_id}.git")))
        .status()
        .unwrap()
        .success()
}

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
    let attacker_id = register(&h, "mallory/app", "https://127.0.0.1:1/mallory/app.git").await;
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
        let (status, answer) = deliver(&h, "mallory/app", 40 + n, &secret_sha, place).await;
        let runs = answer["runs"].as_array().map_or(0, Vec::len);
        assert_eq!(runs, 0, "{place}: {status} {answer}");
        let said = answer.to_string();
        assert_eq!(status, 422, "{place}: {said}");
        assert!(!said.contains("the victim's code"), "{place}: {said}");
    }
    // A repository at a local path fetches its forks beside it: never one of the engine's
    // mirrors, which a fork named `mirrors/<id>` beside a repository two levels under the
    // mirrors' parent would be.
    let local = h.sandbox.path("x/app");
    let local_id = register(&h, "mallory/local", local.to_str().unwrap()).await;
    let mirror_as_fork = format!("https://x/mirrors/{victim_id}.git");
    let (status, answer) = deliver(&h, "mallory/local", 60, &secret_sha, &mirror_as_fork).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        !mirror_holds(&h, local_id, &secret_sha),
        "a mirror was fetched as a fork"
    );

    // Nothing of the victim's reached the attacker's mirror.
    assert!(
        !mirror_holds(&h, attacker_id, &secret_sha),
        "the victim's commit was fetched"
    );
    let runs = store.list_runs_of_repo("mallory/app", 10).await.unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    h.engine.shutdown().await;
}
