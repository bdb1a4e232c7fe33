//! From an issue comment to a pull request, end to end with the real `plue serve`: the
//! real GitHub and Gitea `issue_comment` payloads (`tests/fixtures/webhooks/`, re-signed
//! with the body `/plue fix`), the example `examples/agents/issue-to-pr.plue.py` with its
//! scripted Claude (`examples/agents/scripts/issue-to-pr.json`), and the fake forge of
//! `testkit::forge` (its REST API and a real git remote over HTTP).
//!
//! What is proven: the comment becomes exactly one pull request whose commit is the base
//! plus exactly the agent's change, one agent comment and the start and end answers on the
//! issue; a second delivery of the same comment opens no second pull request; an engine
//! killed after the forge created the pull request but before it heard so (the forge drops
//! the connection) opens no second pull request and posts no comment twice once restarted;
//! the agent's bash, hunting for the forge token in its environment, its files, `/proc`
//! and the checkout's git config, finds nothing; a refusal naming a file named after a
//! secret of the run puts no spelling of it on the forge. On GitHub, every exchange the
//! engine had with the forge is as GitHub's own API description says
//! (`testkit::api_description`; the client alone: `forge/tests/github_api_description.rs`).

use crate::support;
use std::path::Path;
use std::time::Duration;

use crate::support::issue_to_pr::{assert_the_hunt_found_nothing, claude, seed};
use crate::support::{
    client, deliver_webhook, free_port, wait_final, wait_for, webhook_fixture, Engine, Sandbox,
    LLM_KEY,
};
use serde_json::{json, Value};
use testkit::api_description::Description;
use testkit::claude::FakeClaude;
use testkit::forge::{FakeForge, Fault, FaultAction, Flavor};

const SECRET: &str = "webhook-secret-of-the-issue-to-pr-test";
const FIXED: &str = "examples/agents/demo/greet.sh";

/// A forge token made at run time, so that no file (this test's binary included) holds it
/// unless Plue put it there.
fn forge_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ftok{:x}{:x}", nanos, std::process::id())
}

struct World {
    sb: Sandbox,
    forge: FakeForge,
    claude: FakeClaude,
    engine: Engine,
    token: String,
    flavor: Flavor,
    repo: String,
    data: String,
}

impl World {
    async fn new(name: &str, flavor: Flavor) -> World {
        World::with_attack(name, flavor, None).await
    }

    /// A world whose fixer first makes the reply `attack` (a tool call of the attacker's).
    async fn with_attack(name: &str, flavor: Flavor, attack: Option<Value>) -> World {
        let sb = Sandbox::new(name);
        let token = forge_token();
        let forge = FakeForge::start(flavor, &token).unwrap();
        // The repositories the real fixtures name, issue #1 in each.
        let (repo, commenter) = match flavor {
            Flavor::GitHub => ("Codertocat/Hello-World", "Codertocat"),
            Flavor::Gitea => ("example/example", "example"),
        };
        let seeded = sb.path("seed");
        seed(&seeded);
        forge.create_repo_from(repo, &seeded).unwrap();
        let issue = forge.create_issue(
            repo,
            "greet.sh cannot shout",
            "Please add --shout.",
            commenter,
        );
        assert_eq!(issue, 1);
        forge.set_permission(commenter, "admin");
        let claude = claude(&token, attack);
        let data = sb.path("data").to_str().unwrap().to_string();
        let world_engine = start_engine(&sb, &claude, &data).await;
        let world = World {
            sb,
            forge,
            claude,
            engine: world_engine,
            token,
            flavor,
            repo: repo.to_string(),
            data,
        };
        world.register().await;
        world
    }

    fn forge_name(&self) -> &'static str {
        match self.flavor {
            Flavor::GitHub => "github",
            Flavor::Gitea => "gitea",
        }
    }

    async fn register(&self) {
        let response = client()
            .post(format!("{}/api/repos", self.engine.url))
            .json(&json!({
                "name": self.repo,
                "clone_url": self.forge.clone_url(&self.repo),
                "forge": self.forge_name(),
                "webhook_secret": SECRET,
                "api_url": self.forge.api_url(),
                "api_token": self.token,
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(status, 201, "{}", response.text().await.unwrap());
    }

    /// Delivers the real fixture's comment, saying `/plue fix`, as delivery `id`.
    async fn deliver_fix(&self, id: &str) -> Vec<i64> {
        let (path, event) = match self.flavor {
            Flavor::GitHub => ("github/issue_comment-created.json", "issue_comment"),
            Flavor::Gitea => ("gitea/issue_comment-created.json", "issue_comment"),
        };
        let mut payload = webhook_fixture(path);
        payload["comment"]["body"] = json!("/plue fix");
        // The fake forge's repository's default branch (the fixtures say `master`).
        payload["repository"]["default_branch"] = json!("main");
        let (status, answer) = deliver_webhook(
            &self.engine.url,
            self.forge_name(),
            event,
            id,
            &payload,
            SECRET,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        support::run_ids(&answer)
    }

    async fn finished(&self, run: i64) -> Value {
        let run = self
            .sb
            .wait_succeeded(&client(), &self.engine.url, run, Duration::from_secs(180))
            .await;
        run
    }

    /// Waits until the end answer of run `run` is on the issue.
    async fn answered(&self, run: i64, limit: Duration) {
        let marker = format!("<!-- plue:run:{run}:ended -->");
        wait_for(limit, "the end answer", || async {
            self.forge
                .comments(&self.repo)
                .iter()
                .any(|c| c.body.contains(&marker))
                .then_some(())
        })
        .await;
    }

    fn comments_with(&self, needle: &str) -> usize {
        self.forge
            .comments(&self.repo)
            .iter()
            .filter(|c| c.body.contains(needle))
            .count()
    }

    /// The one pull request, checked to hold exactly the agent's change.
    fn the_pull_request(&self) -> testkit::forge::PullRequest {
        let pulls = self.forge.pulls(&self.repo);
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        let pull = pulls[0].clone();
        assert_eq!(pull.base, "main");
        assert!(pull.head.starts_with("plue/comment-"), "{}", pull.head);
        let dir = self.forge.repo_dir(&self.repo);
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let changed = git(&["diff", "--name-only", &pull.base_sha, &pull.head_sha]);
        assert_eq!(changed.trim(), FIXED);
        assert_eq!(
            git(&["rev-parse", &format!("{}^", pull.head_sha)]).trim(),
            pull.base_sha
        );
        let fixed = git(&["show", &format!("{}:{FIXED}", pull.head_sha)]);
        let script: Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/agents/scripts/issue-to-pr.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let written = script["replies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["tool_uses"].as_array().cloned().unwrap_or_default())
            .find(|t| t["name"] == "write_file")
            .unwrap();
        assert_eq!(fixed, written["input"]["content"].as_str().unwrap());
        pull
    }

    async fn restart(&mut self) {
        self.sb.kill9(self.engine.pid);
        self.engine = start_engine(&self.sb, &self.claude, &self.data).await;
    }
}

async fn start_engine(sb: &Sandbox, claude: &FakeClaude, data: &str) -> Engine {
    let secret = format!("ANTHROPIC_API_KEY={LLM_KEY}");
    sb.serve_with_env(
        "engine",
        free_port(),
        &[
            "--data-dir",
            data,
            "--runners",
            "2",
            "--heartbeat-ms",
            "200",
            "--secret",
            &secret,
            // The model's key reaches the fixtures' repositories on either forge (issue 69).
            "--secret-repos",
            "ANTHROPIC_API_KEY=Codertocat/Hello-World,example/example",
            "--public-url",
            "https://plue.example.com",
        ],
        &[("ANTHROPIC_BASE_URL", claude.url())],
    )
    .await
}

async fn a_fix_comment_becomes_one_pull_request(flavor: Flavor) {
    let _serial = support::serial().await;
    let world = World::new(&format!("issue-to-pr-{flavor:?}"), flavor).await;
    let runs = world.deliver_fix("delivery-1").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = runs[0];
    world.finished(run).await;
    world.answered(run, Duration::from_secs(60)).await;

    let pull = world.the_pull_request();
    assert!(pull.body.contains("Fixes #1"), "{}", pull.body);
    let comments = world.forge.comments(&world.repo);
    let started = format!("<!-- plue:run:{run}:started -->");
    let ended = format!("<!-- plue:run:{run}:ended -->");
    assert_eq!(world.comments_with(&started), 1, "{comments:?}");
    assert_eq!(
        world.comments_with("<!-- plue:proposal:"),
        1,
        "{comments:?}"
    );
    assert_eq!(world.comments_with(&ended), 1, "{comments:?}");
    let order: Vec<usize> = [&started, "<!-- plue:proposal:", &ended]
        .iter()
        .map(|m| comments.iter().position(|c| c.body.contains(*m)).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{comments:?}");
    let end = comments.iter().find(|c| c.body.contains(&ended)).unwrap();
    let html = match flavor {
        Flavor::GitHub => format!("{}/{}/pull/{}", world.forge.url(), world.repo, pull.number),
        Flavor::Gitea => format!("{}/{}/pulls/{}", world.forge.url(), world.repo, pull.number),
    };
    assert!(end.body.contains(&html), "{}", end.body);
    let start = comments.iter().find(|c| c.body.contains(&started)).unwrap();
    assert!(
        start
            .body
            .contains(&format!("https://plue.example.com/runs/{run}")),
        "{}",
        start.body
    );
    assert!(
        world
            .forge
            .statuses(&world.repo)
            .iter()
            .any(|s| s.sha == pull.head_sha && s.state == "success"),
        "{:?}",
        world.forge.statuses(&world.repo)
    );

    // The agent's bash looked everywhere and found no forge token; nor did the model.
    let requests = world.claude.requests();
    assert_the_hunt_found_nothing(&requests);
    for request in &requests {
        assert!(!request.body.to_string().contains(&world.token));
    }

    // The same comment delivered again (a new delivery id): no second pull request.
    let again = world.deliver_fix("delivery-2").await;
    for run in again {
        wait_final(&client(), &world.engine.url, run, Duration::from_secs(180)).await;
        world.answered(run, Duration::from_secs(60)).await;
    }
    world.the_pull_request();
    assert_eq!(world.comments_with("<!-- plue:proposal:"), 1);
    if flavor == Flavor::GitHub {
        exchanges_are_as_github_describes(&world.forge);
    }
}

/// Every exchange of the engine with the fake GitHub `forge` validates against GitHub's
/// API description; without npm or the registry that is said and skipped, unless
/// `PLUE_REQUIRE_API_DESCRIPTIONS=1`.
fn exchanges_are_as_github_describes(forge: &FakeForge) {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-descriptions");
    let description = match Description::github(&cache) {
        Ok(description) => description,
        Err(e) if std::env::var("PLUE_REQUIRE_API_DESCRIPTIONS").as_deref() != Ok("1") => {
            eprintln!("not checking the exchanges: GitHub's API description cannot be had ({e:#})");
            return;
        }
        Err(e) => panic!("GitHub's API description cannot be had: {e:#}"),
    };
    let prefix = Flavor::GitHub.api_prefix();
    let exchanges: Vec<_> = forge
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("{prefix}/")))
        .collect();
    assert!(
        !exchanges.is_empty(),
        "the engine never spoke to the forge's API"
    );
    let findings: Vec<String> = exchanges
        .iter()
        .flat_map(|exchange| description.check(prefix, exchange).findings)
        .collect();
    assert!(
        findings.is_empty(),
        "{} of {} exchanges disagree with {}:\n{}",
        findings.len(),
        exchanges.len(),
        description.source(),
        findings.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_fix_comment_becomes_one_pull_request_with_the_agents_diff() {
    a_fix_comment_becomes_one_pull_request(Flavor::GitHub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_fix_comment_becomes_one_pull_request_with_the_agents_diff() {
    a_fix_comment_becomes_one_pull_request(Flavor::Gitea).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_lost_answer_opens_no_second_pull_request_nor_comment() {
    let _serial = support::serial().await;
    let mut world = World::new("issue-to-pr-restart", Flavor::GitHub).await;
    // The forge creates the pull request and the agent's comment but the engine never
    // hears so.
    world
        .forge
        .fault(Fault::new("POST", "/pulls", FaultAction::DropAfterWrite));
    world.forge.fault(Fault::new(
        "POST",
        "/issues/1/comments",
        FaultAction::DropAfterWrite,
    ));
    let runs = world.deliver_fix("delivery-1").await;
    let run = runs[0];
    wait_for(Duration::from_secs(180), "the pull request", || async {
        (!world.forge.pulls(&world.repo).is_empty()).then_some(())
    })
    .await;
    world.restart().await;
    world.finished(run).await;
    world.answered(run, Duration::from_secs(150)).await;
    world.the_pull_request();
    assert_eq!(world.comments_with("<!-- plue:proposal:"), 1);
    assert_eq!(
        world.comments_with(&format!("<!-- plue:run:{run}:started -->")),
        1
    );
}

// The attack (issue 49): the issue's text steers the fixer into writing a file named after
// a secret of the run (the model's key), outside the publisher's `paths_allow`. The
// proposal is refused — and the refusal, which names the path, reached the step's reason,
// the stored proposal and the engine's own end answer on the issue in clear. Every
// comment the engine writes now holds no spelling of it.
async fn a_refusal_naming_a_secret_leaves_it_off_the_forge(flavor: Flavor) {
    let _serial = support::serial().await;
    let attack = json!({"when": "You are the fixer", "text": "Noting the key.",
        "tool_uses": [{"id": "toolu_leak", "name": "write_file",
                       "input": {"path": format!("notes/{LLM_KEY}.txt"), "content": "x\n"}}]});
    let world = World::with_attack(
        &format!("issue-to-pr-leak-{flavor:?}"),
        flavor,
        Some(attack),
    )
    .await;
    let runs = world.deliver_fix("delivery-1").await;
    let run = runs[0];
    let view = wait_final(&client(), &world.engine.url, run, Duration::from_secs(180)).await;
    assert_eq!(view["status"], "failed", "{view}");
    world.answered(run, Duration::from_secs(60)).await;
    assert!(world.forge.pulls(&world.repo).is_empty());
    let hexed: String = LLM_KEY.bytes().map(|b| format!("{b:02x}")).collect();
    let comments = world.forge.comments(&world.repo);
    for comment in &comments {
        assert!(
            !comment.body.contains(LLM_KEY) && !comment.body.contains(&hexed),
            "{}",
            comment.body
        );
    }
    let ended = format!("<!-- plue:run:{run}:ended -->");
    let end = comments.iter().find(|c| c.body.contains(&ended)).unwrap();
    assert!(end.body.contains("notes/***.txt"), "{}", end.body);
    // Links only to the engine's dashboard (and the forge itself).
    assert!(
        end.body
            .contains(&format!("https://plue.example.com/runs/{run}")),
        "{}",
        end.body
    );
    let view = view.to_string();
    assert!(!view.contains(LLM_KEY), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_refusal_naming_a_secret_leaves_it_off_the_forge() {
    a_refusal_naming_a_secret_leaves_it_off_the_forge(Flavor::GitHub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_refusal_naming_a_secret_leaves_it_off_the_forge() {
    a_refusal_naming_a_secret_leaves_it_off_the_forge(Flavor::Gitea).await;
}
