//! Installation tokens GitHub refuses before their planned refresh (issue 70), end to end
//! with the real `plue serve` as a GitHub App: the fake GitHub in App-only mode (tokens
//! valid an hour, so every new one is the answer to a refusal) revokes the tokens the
//! engine cached at their next use, on each path in turn.
//!
//! What is proven, each path's exchange completing with one refusal and one new token per
//! token refused (`FakeForge::check_renewals`): a writer's summoning comment still starts
//! its run (the permission lookup's token, the mirror fetch's, the answers', the proposal's
//! pull request lookup and the check runs'); a comment on a pull request (its lookup); the
//! proposal's git push; a push delivery still starts its run (the mirror fetch, the check
//! run); and a runner's checkout refused for its token fails that attempt only — the
//! engine forgets the token and the step's retry checks out with a new one (the engine
//! started with `--checkouts-from-forge`, so that the checkout goes to the forge at all:
//! by default it comes from the engine's mirror, no token used).

use crate::support;
use std::time::Duration;

use crate::support::{
    client, deliver_webhook, free_port, log_lines, run_ids, step, wait_for, webhook_fixture,
    Engine, Sandbox, LLM_KEY,
};
use serde_json::{json, Value};
use testkit::claude::{script, FakeClaude};
use testkit::forge::app::{AppConfig, Presented, RevocationMark, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

const SECRET: &str = "webhook-secret-of-the-token-refusals-test";
/// The repository the real fixtures name.
const REPO: &str = "Codertocat/Hello-World";
const WRITER: &str = "Codertocat";
/// Writers too, each commenting once: the forge's answer about a login is kept a minute,
/// so only a login not asked yet makes the engine ask.
const WRITERS: [&str; 3] = ["octocat", "monalisa", "hubot"];
const BOT: &str = "plue-test-app[bot]";

/// On a push: a step, then one that checks out after it (retried once).
const CI: &str = r#"
def workflow(ctx):
    first = Step.bash("first", "echo first-started; sleep 6")
    second = Step.bash("second", "test -f README && echo checked-out", depends_on=[first], retries=1)
    return Plan(name="ci", triggers=[Trigger.on_push()], steps=[first, second])
"#;

/// On `/plue note`, by a writer: an agent that writes a note and proposes it.
const NOTE: &str = r#"
def workflow(ctx):
    note = Step.llm(
        "note",
        prompt="You are the note taker. Write a note and propose it.",
        safe_outputs=SafeOutputs(pull_request=True, paths_allow=["notes/**"], branch_prefix="plue/"),
    )
    return Plan(name="note", triggers=[Trigger.on_comment(pattern=r"^/plue note", authors="write")], steps=[note])
"#;

/// The most runs the scripted model serves (three turns each).
const MAX_NOTES: usize = 6;

/// The note taker's turns, for `MAX_NOTES` runs one after the other.
fn claude() -> FakeClaude {
    let turns = [
        json!({"when": "You are the note taker", "text": "",
               "tool_uses": [{"id": "toolu_w", "name": "write_file",
                              "input": {"path": "notes/note.md", "content": "A note.\n"}}]}),
        json!({"when": "You are the note taker", "text": "",
               "tool_uses": [{"id": "toolu_p", "name": "propose_pull_request",
                              "input": {"title": "A note", "body": "As asked."}}]}),
        json!({"when": "You are the note taker", "text": "Proposed."}),
    ];
    let replies: Vec<Value> = (0..MAX_NOTES).flat_map(|_| turns.clone()).collect();
    FakeClaude::start_routed(script::parse(&json!({ "replies": replies }).to_string()).unwrap())
}

struct World {
    sb: Sandbox,
    forge: FakeForge,
    _claude: FakeClaude,
    engine: Engine,
    comments: u64,
}

impl World {
    async fn new() -> World {
        let sb = Sandbox::new("token-refusals");
        let forge = FakeForge::start(Flavor::GitHub, "personal-token-never-given").unwrap();
        forge
            .create_repo_with(
                REPO,
                &[
                    ("README", "hello\n"),
                    (".plue/ci.plue.py", CI),
                    (".plue/note.plue.py", NOTE),
                ],
            )
            .unwrap();
        assert_eq!(forge.create_issue(REPO, "notes", "Take notes.", WRITER), 1);
        for writer in std::iter::once(WRITER).chain(WRITERS) {
            forge.set_permission(writer, "write");
        }
        forge.enable_app(AppConfig::test(Duration::from_secs(3600)));
        let claude = claude();
        let key = sb.write_private("app-key.pem", APP_KEY_PEM);
        let data = sb.path("data");
        let secret = format!("ANTHROPIC_API_KEY={LLM_KEY}");
        let app_api = forge.api_url();
        let engine = sb
            .serve_with_env(
                "engine",
                free_port(),
                &[
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--runners",
                    "2",
                    // The runner's checkout goes to the forge with its token (what this
                    // test refuses), not to the engine's mirror.
                    "--checkouts-from-forge",
                    "--heartbeat-ms",
                    "200",
                    "--secret",
                    &secret,
                    "--secret-repos",
                    &format!("ANTHROPIC_API_KEY={REPO}"),
                    "--public-url",
                    "https://plue.example.com",
                    "--github-app-id",
                    "4242",
                    "--github-app-key-file",
                    key.to_str().unwrap(),
                    "--github-app-api-url",
                    &app_api,
                ],
                &[("ANTHROPIC_BASE_URL", claude.url())],
            )
            .await;
        let response = client()
            .post(format!("{}/api/repos", engine.url))
            .json(&json!({
                "name": REPO,
                "clone_url": forge.clone_url(REPO),
                "forge": "github",
                "webhook_secret": SECRET,
                "api_url": forge.api_url(),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        World {
            sb,
            forge,
            _claude: claude,
            engine,
            comments: 0,
        }
    }

    /// `writer`'s `/plue note` on issue or pull request `number` (a new comment each
    /// time); the run it started.
    async fn note(&mut self, writer: &str, number: u64, on_pull_request: bool) -> i64 {
        self.comments += 1;
        let mut payload = webhook_fixture("github/issue_comment-created.json");
        payload["comment"]["id"] = json!(7000 + self.comments);
        payload["comment"]["body"] = json!("/plue note");
        payload["comment"]["user"]["login"] = json!(writer);
        payload["sender"]["login"] = json!(writer);
        // Not the owner: the forge is asked what the commenter may do.
        payload["comment"]["author_association"] = json!("COLLABORATOR");
        payload["issue"]["number"] = json!(number);
        if on_pull_request {
            payload["issue"]["pull_request"] =
                json!({"url": format!("{}/repos/{REPO}/pulls/{number}", self.forge.api_url())});
        }
        payload["repository"]["default_branch"] = json!("main");
        let id = format!("comment-{}", self.comments);
        let (status, answer) = deliver_webhook(
            &self.engine.url,
            "github",
            "issue_comment",
            &id,
            &payload,
            SECRET,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let runs = run_ids(&answer);
        assert_eq!(runs.len(), 1, "a writer's comment starts its run: {answer}");
        runs[0]
    }

    /// A push of a new commit to main; the run it started.
    async fn push(&self, id: &str) -> i64 {
        let after = self
            .forge
            .commit_files(REPO, "main", "main", &[(&format!("{id}.txt"), id)])
            .unwrap();
        let mut payload = webhook_fixture("github/push-new-branch.json");
        payload["repository"]["full_name"] = json!(REPO);
        payload["repository"]["default_branch"] = json!("main");
        payload["ref"] = json!("refs/heads/main");
        payload["after"] = json!(after);
        payload["pusher"]["name"] = json!(WRITER);
        payload["sender"]["login"] = json!(WRITER);
        let (status, answer) =
            deliver_webhook(&self.engine.url, "github", "push", id, &payload, SECRET).await;
        assert_eq!(status, 200, "a push delivery starts its run: {answer}");
        let runs = run_ids(&answer);
        assert_eq!(runs.len(), 1, "{answer}");
        runs[0]
    }

    async fn succeeded(&self, run: i64) -> Value {
        self.sb
            .wait_succeeded(&client(), &self.engine.url, run, Duration::from_secs(180))
            .await
    }

    /// Waits until summoned run `run` answered its end and opened its pull request, whose
    /// check run it completed; the pull request's number.
    async fn noted(&self, run: i64) -> u64 {
        self.succeeded(run).await;
        let ended = format!("<!-- plue:run:{run}:ended -->");
        wait_for(Duration::from_secs(60), "the end answer", || async {
            self.forge
                .comments(REPO)
                .iter()
                .any(|c| c.body.contains(&ended) && c.author == BOT)
                .then_some(())
        })
        .await;
        let pull = wait_for(Duration::from_secs(60), "the pull request", || async {
            self.forge
                .pulls(REPO)
                .into_iter()
                .find(|p| p.body.contains(&format!("Plue run {run}]")))
        })
        .await;
        self.checked(run, &pull.head_sha).await;
        pull.number
    }

    /// Waits until run `run` completed its check run on `sha`.
    async fn checked(&self, run: i64, sha: &str) {
        wait_for(
            Duration::from_secs(60),
            "the completed check run",
            || async {
                self.forge
                    .check_runs(REPO)
                    .iter()
                    .any(|c| {
                        c.external_id.as_deref() == Some(run.to_string().as_str())
                            && c.head_sha == sha
                            && c.conclusion.is_some()
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// Asserts every token refused since `mark` was presented once and renewed by one new
    /// token, `expected` refusals in all; where each was refused.
    fn renewed(&self, mark: &RevocationMark, expected: usize) -> Vec<String> {
        let renewed = self.forge.check_renewals(mark);
        let refusals = self.forge.token_refusals();
        assert_eq!(renewed, Ok(expected), "{refusals:#?}");
        refusals[refusals.len() - expected..]
            .iter()
            .map(|r| format!("{:?} {}", r.presented, r.request))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_completes_with_one_new_token_per_revoked_one() {
    let _serial = support::serial().await;
    let mut world = World::new().await;

    // Every use's token cached: a push's run (read code, report) and a summoned run that
    // opens a pull request (lookup, read code, answer, write, report).
    let run = world.push("push-1").await;
    world.succeeded(run).await;
    let first_pull = {
        let run = world.note(WRITER, 1, false).await;
        world.noted(run).await
    };
    assert!(world.forge.token_refusals().is_empty());

    // A writer's comment on the issue with every cached token revoked at its next use.
    let mark = world.forge.revocation_mark();
    world.forge.revoke_tokens_at_next_use(None);
    let run = world.note(WRITERS[0], 1, false).await;
    world.noted(run).await;
    let refused = world.renewed(&mark, 5);
    for path in [
        "collaborators",
        "git fetch",
        "issues/1/comments",
        "pulls",
        "check-runs",
    ] {
        assert!(
            refused.iter().any(|r| r.contains(path)),
            "{path}: {refused:#?}"
        );
    }

    // A comment on the pull request: its lookup is the first API call, refused.
    let mark = world.forge.revocation_mark();
    world.forge.revoke_tokens_at_next_use(Some(Presented::Api));
    let run = world.note(WRITERS[1], first_pull, true).await;
    world.noted(run).await;
    let refused = world.renewed(&mark, 4);
    assert!(
        refused[0].ends_with(&format!("/pulls/{first_pull}")),
        "{refused:#?}"
    );

    // The proposal's git push.
    let mark = world.forge.revocation_mark();
    world
        .forge
        .revoke_tokens_at_next_use(Some(Presented::GitPush));
    let run = world.note(WRITERS[2], 1, false).await;
    world.noted(run).await;
    let refused = world.renewed(&mark, 1);
    assert_eq!(refused, [format!("GitPush git push {REPO}")]);

    // A push delivery: the mirror fetch and the run's check run.
    let mark = world.forge.revocation_mark();
    world.forge.revoke_tokens_at_next_use(None);
    let run = world.push("push-2").await;
    world.succeeded(run).await;
    let head = world.forge.branch_sha(REPO, "main").unwrap();
    world.checked(run, &head).await;
    let refused = world.renewed(&mark, 2);
    assert_eq!(refused[0], format!("GitFetch git fetch {REPO}"));

    // A runner's checkout: revoked while the first step runs, refused at the second's. The
    // runner cannot ask for another token, so that attempt fails; the engine forgets the
    // token it handed and the retry checks out with a new one.
    let before = world.forge.token_refusals().len();
    let minted = world.forge.installation_tokens().len();
    let run = world.push("push-3").await;
    let engine = world.engine.url.clone();
    wait_for(Duration::from_secs(60), "the first step to run", || async {
        let lines = log_lines(&client(), &engine, run, "first").await?;
        lines
            .iter()
            .any(|l| l["text"].as_str() == Some("first-started"))
            .then_some(())
    })
    .await;
    world
        .forge
        .revoke_tokens_at_next_use(Some(Presented::GitFetch));
    let view = world.succeeded(run).await;
    assert_eq!(step(&view, "second")["attempts"], 2, "{view}");
    let refusals = &world.forge.token_refusals()[before..];
    assert!(!refusals.is_empty());
    // The runner's checkout tries twice (the commit alone, then every ref) with the token
    // it was given: both refusals are of that one token, at the checkout.
    assert!(
        refusals
            .iter()
            .all(|r| r.token == refusals[0].token && r.presented == Presented::GitFetch),
        "{refusals:#?}"
    );
    let new = &world.forge.installation_tokens()[minted..];
    assert_eq!(new.len(), 1, "one new token: {new:#?}");
    assert_eq!(new[0].permissions, refusals[0].permissions);
}
