//! The Gitea flows end to end against a real Gitea (`scripts/gitea/up.sh`: the release
//! `scripts/gitea/go.mod` pins, built from its Go module) and the real `plue serve`: each
//! test makes its own repository (public: the engine cannot fetch a private Gitea
//! repository yet) through Gitea's API, pushes with git over HTTP,
//! lets Gitea deliver its own webhooks (through a tap that forwards them unchanged and
//! keeps Plue's answers: `support/real_gitea.rs`), and reads what Plue wrote back through
//! Gitea's API — commit statuses, comments, a pull request and its commit.
//!
//! Without `PLUE_GITEA_URL` every test says it skips and passes; with
//! `PLUE_REQUIRE_GITEA=1` that is a failure:
//!
//! ```sh
//! source "$(scripts/gitea/up.sh)" && PLUE_REQUIRE_GITEA=1 cargo test -p engine --test real_gitea
//! ```
//!
//! Why one file just past ~600 lines: each flow is one test over the same Gitea and
//! engine; what they share already lives in `support/real_gitea.rs`.

use crate::support;
use std::time::Duration;

use crate::support::issue_to_pr::{
    assert_the_hunt_found_nothing, claude, seed, written_by_the_fixer,
};
use crate::support::real_gitea::{self, gitea, unique, World, BOT, PUBLIC_URL};
use crate::support::{serial, step, wait_for, LLM_KEY};
use serde_json::json;

/// CI on pushes to `main`, pull requests into it and by hand: passes while README.md is `ok`.
const CI: &str = r#"
def workflow(ctx):
    return Plan(
        name="CI",
        triggers=[Trigger.on_push(branch="main"), Trigger.on_pull_request(branches=["main"]),
                  Trigger.manual()],
        steps=[Step.bash("test", "echo event=%s; cat README.md; grep -qx ok README.md" % ctx.event)],
    )
"#;

/// Summoned by `/plue echo` on an issue, by writers only.
const ECHO: &str = r#"
def workflow(ctx):
    return Plan(
        name="Echo",
        triggers=[Trigger.on_comment(pattern=r"^/plue echo", on=["issue"], authors="write")],
        steps=[Step.bash("echo", "echo summoned")],
    )
"#;

/// Runs when a label is added to a pull request.
const LABELS: &str = r#"
def workflow(ctx):
    return Plan(name="Labels", triggers=[Trigger.on_pull_request(actions=["labeled"])],
                steps=[Step.bash("labeled", "echo labeled %s" % (ctx.pr.number if ctx.pr else "-"))])
"#;

/// Summoned by `/plue again` on a pull request, by writers only.
const AGAIN: &str = r#"
def workflow(ctx):
    return Plan(name="Again", steps=[Step.bash("again", "echo again")], triggers=[
        Trigger.on_comment(pattern=r"^/plue again", on=["pull_request"], authors="write")])
"#;

/// On tags `v*`.
const RELEASE: &str = r#"
def workflow(ctx):
    return Plan(name="Release", triggers=[Trigger.on_push(tags=["v*"])],
                steps=[Step.bash("release", "echo releasing " + ctx.ref)])
"#;

const CONTEXT: &str = "plue/CI";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_and_gitea_shows_its_commit_statuses() {
    let Some(gitea) = gitea("a_push_runs_and_gitea_shows_its_commit_statuses") else {
        return;
    };
    let _serial = serial().await;
    // The first push makes `main`.
    let files = [
        (".plue/ci.plue.py", CI),
        (".plue/release.plue.py", RELEASE),
        ("README.md", "ok\n"),
    ];
    let world = World::start(gitea, "push", &files, &[], &[]).await;
    let tapped = &world.initial;
    let good = tapped.payload()["after"].as_str().unwrap().to_string();
    let run = world.run_at(&good, "push").await;
    assert_eq!(tapped.runs(), [run["id"].as_i64().unwrap()]);
    let id = run["id"].as_i64().unwrap();
    let run = world.finished(id).await;
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        world.sb.diagnostics()
    );
    assert_eq!(step(&run, "test")["status"], "succeeded");
    // The admin pushed, a person: the run may have the repository's secrets.
    assert_eq!(run["secrets_allowed"], true, "{run}");
    assert_eq!(run["ref"], "refs/heads/main");
    world.assert_statuses(CONTEXT, &good, id, "success").await;

    let bad = world.work.push("main", &[("README.md", "not good\n")]);
    let id = world.run_at(&bad, "push").await["id"].as_i64().unwrap();
    assert_eq!(world.finished(id).await["status"], "failed");
    world.assert_statuses(CONTEXT, &bad, id, "failure").await;

    // A tag pushed onto the first commit: the release, not CI.
    world
        .work
        .git(&format!("git tag v1.0 {good} && git push -q origin v1.0"));
    let tag = world
        .tap
        .delivered("push", "the tag's push", |p| p["ref"] == "refs/tags/v1.0")
        .await;
    assert_eq!(tag.status, 200, "{}", tag.answer);
    let runs = tag.runs();
    assert_eq!(runs.len(), 1, "{}", tag.answer);
    let run = world.finished(runs[0]).await;
    assert_eq!(
        (&run["workflow"], &run["status"], &run["sha"]),
        (&json!("Release"), &json!("succeeded"), &json!(good)),
        "{run}"
    );
    world
        .assert_statuses("plue/Release", &good, runs[0], "success")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_opened_and_synchronized_runs_on_its_head() {
    let Some(gitea) = gitea("a_pull_request_opened_and_synchronized_runs_on_its_head") else {
        return;
    };
    let _serial = serial().await;
    let files = [
        (".plue/ci.plue.py", CI),
        (".plue/labels.plue.py", LABELS),
        (".plue/again.plue.py", AGAIN),
        ("README.md", "ok\n"),
    ];
    let world = World::start(gitea, "pull", &files, &[], &[]).await;
    let base = world.initial.payload()["after"].clone();

    let head = world
        .work
        .push("feature", &[("feature.txt", "a feature\n")]);
    let path = format!("/repos/{}/pulls", world.repo);
    let body = json!({"head": "feature", "base": "main", "title": "A feature"});
    let pull = world.gitea.ok("POST", &path, Some(body)).await;
    let number = pull["number"].as_u64().unwrap();

    let opened = world
        .tap
        .delivered("pull_request", "the pull request opened", |p| {
            p["action"] == "opened"
        })
        .await;
    assert_eq!(opened.status, 200, "{}", opened.answer);
    let run = world.run_at(&head, "pull_request").await;
    let id = run["id"].as_i64().unwrap();
    assert_eq!(opened.runs(), [id]);
    let run = world.finished(id).await;
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        world.sb.diagnostics()
    );
    // Its head is a branch of the repository itself, not a fork's.
    assert_eq!(run["secrets_allowed"], true, "{run}");
    world.assert_statuses(CONTEXT, &head, id, "success").await;
    // The push of the branch is delivered too, and starts nothing (CI pushes on main).
    let pushed = world.push_delivered(&head).await;
    assert_eq!(pushed.runs(), Vec::<i64>::new(), "{}", pushed.answer);

    // A push onto the branch: Gitea's `synchronized`.
    let moved = world
        .work
        .push("feature", &[("README.md", "not good on feature\n")]);
    let synced = world
        .tap
        .delivered("pull_request", "the pull request synchronized", |p| {
            p["action"] == "synchronized" && p["pull_request"]["head"]["sha"] == moved
        })
        .await;
    assert_eq!(synced.status, 200, "{}", synced.answer);
    let id = world.run_at(&moved, "pull_request").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(synced.runs(), [id]);
    assert_eq!(world.finished(id).await["status"], "failed");
    world.assert_statuses(CONTEXT, &moved, id, "failure").await;
    // Gitea shows the pull request's head with that failure.
    let pull = world
        .gitea
        .ok("GET", &format!("{path}/{number}"), None)
        .await;
    assert_eq!(pull["head"]["sha"], moved.as_str());

    // A label added: Gitea's `label_updated`, a `labeled` pull request to Plue.
    let label = world
        .gitea
        .ok(
            "POST",
            &format!("/repos/{}/labels", world.repo),
            Some(json!({"name": "ready", "color": "#00aa00"})),
        )
        .await;
    let path = format!("/repos/{}/issues/{number}/labels", world.repo);
    let body = json!({ "labels": [label["id"]] });
    world.gitea.ok("POST", &path, Some(body)).await;
    let labeled = world
        .tap
        .delivered("pull_request", "the label added", |p| {
            p["action"] == "label_updated"
        })
        .await;
    assert_eq!(labeled.status, 200, "{}", labeled.answer);
    let runs = labeled.runs();
    assert_eq!(runs.len(), 1, "{}", labeled.answer);
    let run = world.finished(runs[0]).await;
    assert_eq!(run["workflow"], "Labels", "{run}");
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        world.sb.diagnostics()
    );

    // A writer's comment on the pull request (Gitea's `issue_comment`, `is_pull`): the
    // workflow of the base runs, never the head's code.
    let admin = world.gitea.admin.clone();
    let comment = world
        .gitea
        .comment(&admin, &world.repo, number, "/plue again")
        .await;
    let tapped = world
        .tap
        .delivered("issue_comment", "the comment on the pull request", |p| {
            p["comment"]["id"] == comment && p["is_pull"] == true
        })
        .await;
    let runs = tapped.runs();
    assert_eq!(runs.len(), 1, "{}", tapped.answer);
    let run = world.finished(runs[0]).await;
    assert_eq!(
        (&run["workflow"], &run["status"], &run["sha"]),
        (&json!("Again"), &json!("succeeded"), &base),
        "{run}"
    );
}

/// On pull requests into `main`, with the repository's secret `DEPLOY_TOKEN`.
const CI_WITH_SECRET: &str = r#"
def workflow(ctx):
    return Plan(
        name="CI",
        triggers=[Trigger.on_pull_request(branches=["main"])],
        steps=[Step.bash("test", 'echo "withheld=${PLUE_SECRETS_WITHHELD:-} token=${DEPLOY_TOKEN:-none}"; cat fork.txt',
                         secrets=["DEPLOY_TOKEN"])],
    )
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_from_a_fork_runs_its_commit_without_secrets() {
    let Some(gitea) = gitea("a_pull_request_from_a_fork_runs_its_commit_without_secrets") else {
        return;
    };
    let _serial = serial().await;
    let files = [(".plue/ci.plue.py", CI_WITH_SECRET), ("README.md", "ok\n")];
    let world = World::start(gitea, "fork", &files, &[], &[]).await;
    let secret = unique("deploy-token");
    support::put_repo_secret(&world.engine.url, &world.repo, "DEPLOY_TOKEN", &secret).await;
    // Someone else forks the repository and pushes a branch to the fork.
    let forker = unique("forker");
    world.gitea.ensure_user(&forker).await;
    let path = format!("/repos/{}/forks", world.repo);
    let fork = world
        .gitea
        .ok_as(Some(&forker), "POST", &path, Some(json!({})))
        .await;
    let fork = fork["full_name"].as_str().unwrap().to_string();
    let head = world.work.git(&format!(
        "git remote add fork {}/{fork}.git && git checkout -q -b fix main \
         && echo from-the-fork > fork.txt && git add -A && git commit -qm fork \
         && git push -q fork fix && git rev-parse HEAD",
        world.gitea.url
    ));
    let path = format!("/repos/{}/pulls", world.repo);
    let body = json!({"head": format!("{forker}:fix"), "base": "main", "title": "From a fork"});
    world
        .gitea
        .ok_as(Some(&forker), "POST", &path, Some(body))
        .await;

    let opened = world
        .tap
        .delivered("pull_request", "the fork's pull request", |p| {
            p["action"] == "opened"
        })
        .await;
    assert_eq!(opened.status, 200, "{}", opened.answer);
    let runs = opened.runs();
    assert_eq!(runs.len(), 1, "{}", opened.answer);
    let run = world.finished(runs[0]).await;
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        world.sb.diagnostics()
    );
    assert_eq!(run["sha"], head.as_str());
    assert_eq!(run["secrets_allowed"], false, "{run}");
    // The step ran the fork's commit, and got no secret.
    let lines = support::log_lines(&support::client(), &world.engine.url, runs[0], "test")
        .await
        .expect("the step's log");
    let log: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    let log = log.join("\n");
    assert!(log.contains("withheld=DEPLOY_TOKEN token=none"), "{log}");
    assert!(log.contains("from-the-fork"), "{log}");
    assert!(!log.contains(&secret), "{log}");
    world
        .assert_statuses(CONTEXT, &head, runs[0], "success")
        .await;
}

// Gitea says who may summon (`authors="write"`): its permission API, asked with the token
// of Plue's account, which Gitea answers only for an admin of the repository. While that
// account merely writes, a summons fails closed (422, Gitea's reason), and once it is an
// admin the same delivery, sent again, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_comment_summons_nothing_and_a_writers_does() {
    let Some(gitea) = gitea("a_readers_comment_summons_nothing_and_a_writers_does") else {
        return;
    };
    let _serial = serial().await;
    let files = [(".plue/echo.plue.py", ECHO), ("README.md", "ok\n")];
    let world = World::start(gitea, "people", &files, &[], &[]).await;
    let (reader, writer) = (unique("reader"), unique("writer"));
    for (login, permission) in [(&reader, "read"), (&writer, "write")] {
        world.gitea.ensure_user(login).await;
        world
            .gitea
            .collaborator(&world.repo, login, permission)
            .await;
    }
    let issue = world.gitea.open_issue(&world.repo, "Echo", "please").await;

    let by_reader = world
        .gitea
        .comment(&reader, &world.repo, issue, "/plue echo")
        .await;
    let tapped = world
        .tap
        .delivered("issue_comment", "the reader's comment", |p| {
            p["comment"]["id"] == by_reader
        })
        .await;
    assert_eq!(tapped.status, 200, "{}", tapped.answer);
    assert_eq!(tapped.runs(), Vec::<i64>::new(), "{}", tapped.answer);
    let refused = tapped.answer["refused"].to_string();
    assert!(
        refused.contains(&reader) && refused.contains("read"),
        "{}",
        tapped.answer
    );

    // Plue's account demoted to write: Gitea will not tell it the writer's permission.
    world.gitea.collaborator(&world.repo, BOT, "write").await;
    let by_writer = world
        .gitea
        .comment(&writer, &world.repo, issue, "/plue echo")
        .await;
    let tapped = world
        .tap
        .delivered("issue_comment", "the writer's comment", |p| {
            p["comment"]["id"] == by_writer
        })
        .await;
    assert_eq!(tapped.status, 422, "{}", tapped.answer);
    let said = tapped.answer.to_string();
    assert!(
        said.contains(&writer) && said.contains("403") && said.contains("Only admins"),
        "{said}"
    );
    assert!(world.runs().await.is_empty());
    // An admin again, the same delivery once more: the writer summons.
    world.gitea.collaborator(&world.repo, BOT, "admin").await;
    let (status, answer) = world.tap.resend(&tapped).await;
    assert_eq!(status, 200, "{answer}");
    let runs = support::run_ids(&answer);
    assert_eq!(runs.len(), 1, "{answer}");
    let run = world.finished(runs[0]).await;
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        world.sb.diagnostics()
    );
    assert_eq!(run["event"], "comment", "{run}");
    // Exactly that one run, the reader's comment having started none.
    assert_eq!(world.runs().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_push_starts_no_second_run() {
    let Some(gitea) = gitea("a_redelivered_push_starts_no_second_run") else {
        return;
    };
    let _serial = serial().await;
    let files = [(".plue/ci.plue.py", CI), ("README.md", "ok\n")];
    let world = World::start(gitea, "redeliver", &files, &[], &[]).await;
    let first = world.initial.clone();
    let runs = first.runs();
    assert_eq!(runs.len(), 1, "{}", first.answer);

    // The very same request again (same X-Gitea-Delivery, same bytes).
    let (status, again) = world.tap.resend(&first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(support::run_ids(&again), runs);

    // Gitea's own redelivery ("Replay" on the webhook's page): the stored body, a new id.
    world
        .gitea
        .replay(&world.repo, world.hook, &first.delivery)
        .await;
    let replayed = wait_for(Duration::from_secs(60), "the replayed delivery", || async {
        world
            .tap
            .seen()
            .into_iter()
            .find(|t| t.body == first.body && t.delivery != first.delivery)
    })
    .await;
    assert_eq!(replayed.status, 200, "{}", replayed.answer);
    assert_eq!(replayed.answer["duplicate"], true, "{}", replayed.answer);
    assert_eq!(replayed.runs(), runs);

    world.finished(runs[0]).await;
    let all = world.runs().await;
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, runs, "one run for one push: {all:#?}");

    // A dispatch binds the name to the id Gitea's API gives it; Gitea's deliveries name
    // the same id, so the next push is still taken.
    let http = support::client();
    let url = &world.engine.url;
    let dispatched = support::dispatch_retrying_to(&http, url, &world.repo, "ci", json!({})).await;
    assert_eq!(world.finished(dispatched).await["status"], "succeeded");
    let sha = world.work.push("main", &[("more.txt", "more\n")]);
    let pushed = world.push_delivered(&sha).await;
    assert_eq!(
        (pushed.status, pushed.runs().len()),
        (200, 1),
        "{}",
        pushed.answer
    );
}

const FIXED: &str = "examples/agents/demo/greet.sh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_comment_ends_in_a_pull_request_plue_opened_on_gitea() {
    let Some(gitea) = gitea("a_fix_comment_ends_in_a_pull_request_plue_opened_on_gitea") else {
        return;
    };
    let _serial = serial().await;
    // The example's files as the repository's first commit.
    let seeded = tempfile::tempdir().unwrap();
    seed(seeded.path());
    let files = support::real_gitea::files_below(seeded.path());
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let prepared = World::prepare(gitea, "agent").await;
    // The scripted model; its fixer first hunts for Plue's Gitea token, which no step may
    // hold. The model's key is engine-wide and reaches this repository only.
    let claude = claude(&prepared.bot_token, None);
    let key = format!("ANTHROPIC_API_KEY={LLM_KEY}");
    let reach = format!("ANTHROPIC_API_KEY={}", prepared.repo);
    let args = ["--secret", &key, "--secret-repos", &reach];
    let env = [("ANTHROPIC_BASE_URL", claude.url())];
    let world = World::serve(prepared, &files, &args, &env).await;
    let repo = world.repo.as_str();
    let base = world.work.git("git rev-parse main");
    let title = "greet.sh cannot shout";
    let issue = world
        .gitea
        .open_issue(repo, title, "Please add --shout.")
        .await;
    let admin = world.gitea.admin.clone();
    let comment = world.gitea.comment(&admin, repo, issue, "/plue fix").await;
    let tapped = world
        .tap
        .delivered("issue_comment", "the fix comment", |p| {
            p["comment"]["id"] == comment
        })
        .await;
    assert_eq!(tapped.status, 200, "{}", tapped.answer);
    let runs = tapped.runs();
    assert_eq!(runs.len(), 1, "{}", tapped.answer);
    let run = runs[0];
    let view = world.finished(run).await;
    assert_eq!(
        view["status"],
        "succeeded",
        "{view}\n{}",
        world.sb.diagnostics()
    );

    // Plue's answers on the issue: started, the agent's comment, ended — each once, in
    // that order, all from Plue's account.
    let ended = format!("<!-- plue:run:{run}:ended -->");
    let comments = wait_for(Duration::from_secs(60), "the end answer", || async {
        let comments = world.gitea.comments(repo, issue).await;
        comments
            .iter()
            .any(|c| real_gitea::body_of(c).contains(&ended))
            .then_some(comments)
    })
    .await;
    let started = format!("<!-- plue:run:{run}:started -->");
    let markers = [started.as_str(), "<!-- plue:proposal:", ended.as_str()];
    let mut at = Vec::new();
    for marker in markers {
        let with: Vec<usize> = (0..comments.len())
            .filter(|i| real_gitea::body_of(&comments[*i]).contains(marker))
            .collect();
        assert_eq!(with.len(), 1, "{marker}: {comments:#?}");
        assert_eq!(comments[with[0]]["user"]["login"], BOT);
        at.push(with[0]);
    }
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{comments:#?}");
    assert!(
        real_gitea::body_of(&comments[at[0]]).contains(&format!("{PUBLIC_URL}/runs/{run}")),
        "{}",
        real_gitea::body_of(&comments[at[0]])
    );

    // One pull request, opened by Plue's account from its branch into main.
    let pull = world.plues_pull_request(comment).await;
    assert!(
        real_gitea::body_of(&comments[at[2]]).contains(pull["html_url"].as_str().unwrap()),
        "{}",
        real_gitea::body_of(&comments[at[2]])
    );
    assert!(
        real_gitea::body_of(&pull).contains(&format!("#{issue}")),
        "{}",
        real_gitea::body_of(&pull)
    );
    // Its commit is the base plus exactly the agent's change.
    let number = pull["number"].as_u64().unwrap();
    let head = pull["head"]["sha"].as_str().unwrap().to_string();
    let changed = world
        .gitea
        .ok("GET", &format!("/repos/{repo}/pulls/{number}/files"), None)
        .await;
    let names: Vec<&str> = changed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, [FIXED], "{changed}");
    let commit = world
        .gitea
        .ok("GET", &format!("/repos/{repo}/git/commits/{head}"), None)
        .await;
    let parents: Vec<&str> = commit["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha"].as_str().unwrap())
        .collect();
    assert_eq!(parents, [base.as_str()], "{commit}");
    let fixed = world
        .gitea
        .ok(
            "GET",
            &format!("/repos/{repo}/raw/{FIXED}?ref={head}"),
            None,
        )
        .await;
    assert_eq!(fixed.as_str(), Some(written_by_the_fixer(FIXED).as_str()));
    // The run's commit status is on the pull request's head.
    wait_for(Duration::from_secs(60), "a success on the head", || async {
        let statuses = world.gitea.statuses(repo, &head).await;
        statuses
            .iter()
            .any(|s| s["status"] == "success")
            .then_some(())
    })
    .await;

    // No step found the token; nor did the model get it.
    let requests = claude.requests();
    assert_the_hunt_found_nothing(&requests);
    for request in &requests {
        assert!(!request.body.to_string().contains(&world.bot_token));
    }

    // The same delivery again: nothing new.
    let (status, again) = world.tap.resend(&tapped).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    world.plues_pull_request(comment).await;
}
