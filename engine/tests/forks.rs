//! Runs of pull requests from forks are fenced off (issue 29), played by the attacker: a
//! fork's plan that names the repository's `deploy` group with `cancel_in_progress`, or
//! that holds the group with an approval wait, touches only other forks' runs; a fork's
//! step asking for `zone=prod` is never handed to the prod runner whose token does not
//! accept forks, and fails with the reason when no runner accepts it; the runner protocol
//! on its own listener is served nowhere else, and that listener serves nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support;

use evaluator::plan::{Action, ApprovalAction, Concurrency, Plan, Step};
use plue_server::server::EngineConfig;
use plue_store::{now_ms, NewRunnerToken, RunnerTokenKind, Store};
use plue_types::protocol as wire;
use plue_types::status::{RunState, StepStatus};
use plue_vault::tokens;
use serde_json::{json, Value};

const SHARED: &str = "shared-registration-token-0123";

fn deploy(cancel_in_progress: bool, steps: Vec<Step>) -> Plan {
    Plan {
        concurrency: Some(Concurrency {
            group: "deploy".into(),
            cancel_in_progress,
        }),
        ..support::plan("deploy", steps)
    }
}

fn approval(id: &str) -> Step {
    let action: ApprovalAction = serde_json::from_value(json!({})).expect("an approval");
    let mut step = Step::new(id, Action::Approval(action));
    step.timeout = 3600;
    step
}

async fn run(store: &Store, run_id: i64) -> plue_store::RunRow {
    store.run(run_id).await.unwrap().expect("the run")
}

/// The attack: a fork's PR names the repository's `deploy` group with
/// `cancel_in_progress=True`, to cancel the deploy in progress (or supersede the one
/// waiting). Without the forks' own scope the fork run asked the running deploy to cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_naming_the_deploy_group_cancels_nothing_of_the_repository() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 100);
        let repo = support::create_repo(&store).await;
        let work = || vec![support::bash_step("work", "true")];
        let running = support::start_pr_run(&executor, repo, &deploy(false, work()), false).await;
        let runner = store
            .register_runner("r", "{}", "hash-r", now_ms())
            .await
            .unwrap();
        let claimed = store
            .claim(runner, &[String::new()], now_ms())
            .await
            .unwrap();
        assert_eq!(claimed.expect("the deploy's step").run_id, running);
        let waiting = support::start_pr_run(&executor, repo, &deploy(false, work()), false).await;
        assert_eq!(run(&store, waiting).await.status, RunState::Pending);

        let fork = support::start_pr_run(&executor, repo, &deploy(true, work()), true).await;
        let deploying = run(&store, running).await;
        assert_eq!(deploying.status, RunState::Running);
        assert!(
            !deploying.cancel_requested,
            "the deploy in progress goes on"
        );
        let next = run(&store, waiting).await;
        assert_eq!(next.status, RunState::Pending);
        assert!(
            !next.cancel_requested,
            "the waiting deploy is not superseded"
        );
        // The fork's run is in a group of its own: nothing of the repository holds it.
        assert_eq!(run(&store, fork).await.status, RunState::Queued);

        // Among forks, the group works as ever.
        support::start_pr_run(&executor, repo, &deploy(true, work()), true).await;
        assert!(
            run(&store, fork).await.cancel_requested,
            "a newer fork run cancels the older"
        );
        assert!(!run(&store, running).await.cancel_requested);
    }
}

/// The attack: a fork's PR names `deploy` and waits for an approval nobody gives, to hold
/// the group so the repository cannot deploy. Without the forks' own scope the
/// repository's run waited (`pending`) behind the fork's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_waiting_for_approval_holds_no_group_of_the_repository() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 100);
        let repo = support::create_repo(&store).await;
        let fork = support::start_pr_run(
            &executor,
            repo,
            &deploy(false, vec![approval("hold")]),
            true,
        )
        .await;
        executor.advance(fork).await.unwrap();
        let held = store.step_run(fork, "hold").await.unwrap().unwrap();
        assert_eq!(
            held.status,
            StepStatus::Waiting,
            "the fork's run waits for its approval"
        );

        let plan = deploy(false, vec![support::bash_step("work", "true")]);
        let ours = support::start_pr_run(&executor, repo, &plan, false).await;
        let row = run(&store, ours).await;
        assert_eq!(row.status, RunState::Queued, "{:?}", row.reason);
        assert!(!row.cancel_requested);
        // And a second fork run waits behind the first fork, not behind ours.
        let fork2 = support::start_pr_run(&executor, repo, &deploy(false, vec![]), true).await;
        let waiting = run(&store, fork2).await;
        assert_eq!(waiting.status, RunState::Pending);
        assert!(waiting.reason.unwrap().contains(&format!("run {fork}")));
        assert!(!run(&store, ours).await.cancel_requested);
    }
}

/// The API shows the group a fork's run is in: `fork:deploy`, kept apart from the
/// repository's `deploy` (regression: it showed `deploy`, as if the fork's run shared the
/// repository's group), and the reason a fork's run waits names that group too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_a_fork_runs_own_group() {
    let dir = tempfile::tempdir().unwrap();
    let engine = support::start_in_process(dir.path(), EngineConfig::new(SHARED.into())).await;
    let store = engine.executor.store().clone();
    let http = support::client();
    let repo = support::create_repo(&store).await;
    let plan = deploy(false, vec![approval("hold")]);
    let ours = support::start_pr_run(&engine.executor, repo, &plan, false).await;
    let fork = support::start_pr_run(&engine.executor, repo, &plan, true).await;
    let fork2 = support::start_pr_run(&engine.executor, repo, &plan, true).await;
    let view = |id: i64| {
        let (http, url) = (http.clone(), format!("{}/api/runs/{id}", engine.url));
        async move { support::get_json(&http, &url).await }
    };
    assert_eq!(view(ours).await["concurrency_group"], "deploy");
    let shown = view(fork).await;
    assert_eq!(shown["concurrency_group"], "fork:deploy", "{shown}");
    assert_eq!(shown["secrets_allowed"], false);
    let waiting = view(fork2).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(
        waiting["reason"],
        format!("waiting for run {fork} in concurrency group 'fork:deploy'")
    );
}

/// A scoped token in the store; the token itself.
async fn runner_token(store: &Store, name: &str, labels: Value, accept_forks: bool) -> String {
    let token = tokens::new_token().unwrap();
    store
        .create_runner_token(&NewRunnerToken {
            kind: RunnerTokenKind::Scoped,
            name,
            token_hash: &tokens::hash_token(&token),
            labels_json: &labels.to_string(),
            secrets: true,
            accept_forks,
            expires_at: None,
            now: now_ms(),
        })
        .await
        .unwrap();
    token
}

/// Registers a runner; its session token.
async fn session(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    labels: Value,
    accept_forks: Option<bool>,
) -> String {
    let response =
        support::register_labelled_runner(http, url, token, name, labels, accept_forks).await;
    assert_eq!(response.status(), 200, "registering {name}");
    let registered: wire::RegisterResponse = response.json().await.unwrap();
    registered.session_token
}

/// The run of the step a poll handed out, if any.
async fn poll(http: &reqwest::Client, url: &str, session: &str) -> Option<i64> {
    let polled: wire::PollResponse = support::post_json(
        http,
        &format!("{url}{}", wire::POLL),
        session,
        &json!({"wait_ms": 0}),
    )
    .await;
    polled.assignment.map(|a| a.run_id)
}

fn prod_step() -> Step {
    let mut step = support::bash_step("deploy", "true");
    step.runner = BTreeMap::from([("zone".to_string(), "prod".to_string())]);
    step
}

/// The attack: a fork's PR asks for `zone=prod`, the labels of the runner that holds the
/// production credentials. Its token was made without `--accept-forks`: it never gets the
/// step (without the fence it claimed it), and with no runner accepting forks for
/// `zone=prod` the step fails at once, saying why. A runner whose token accepts forks
/// takes such a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_step_goes_only_to_a_runner_that_accepts_forks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = support::start_in_process_with_runner_listener(
        dir.path(),
        EngineConfig::new(SHARED.into()),
    )
    .await;
    let (store, url) = (engine.executor.store().clone(), engine.runner_url.clone());
    let http = support::client();
    let repo = support::create_repo(&store).await;
    let prod = runner_token(&store, "prod", json!({"zone": "prod"}), false).await;
    let zone = json!({"zone": "prod"});
    let prod_runner = session(&http, &url, &prod, "prod-1", zone.clone(), None).await;
    // It cannot ask for forks its token does not allow.
    let asked =
        support::register_labelled_runner(&http, &url, &prod, "prod-2", zone.clone(), Some(true))
            .await;
    assert_eq!(asked.status(), 403);
    assert!(asked.text().await.unwrap().contains("--accept-forks"));

    let plan = support::plan("deploy", vec![prod_step()]);
    let fork = support::start_pr_run(&engine.executor, repo, &plan, true).await;
    let ours = support::start_pr_run(&engine.executor, repo, &plan, false).await;
    assert_eq!(poll(&http, &url, &prod_runner).await, Some(ours));
    assert_eq!(
        poll(&http, &url, &prod_runner).await,
        None,
        "never the fork's step"
    );
    let failed = support::wait_for(Duration::from_secs(20), "the fork's step fails", || {
        let store = store.clone();
        async move {
            let step = store.step_run(fork, "deploy").await.ok()??;
            (step.status == StepStatus::Failed).then_some(step)
        }
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert_eq!(
        reason,
        "no runner accepts runs of pull requests from forks for labels zone=prod: set \
         accept_forks on a runner class or token"
    );

    // An unlabelled fork step fails too (no runner accepting forks at all), and so does
    // the next: the engine's own holder runners never count as runners that accept them.
    let unlabelled = support::plan("lint", vec![support::bash_step("lint", "true")]);
    for _ in 0..2 {
        let fork = support::start_pr_run(&engine.executor, repo, &unlabelled, true).await;
        let failed = support::wait_for(Duration::from_secs(20), "the fork's lint fails", || {
            let store = store.clone();
            async move {
                let step = store.step_run(fork, "lint").await.ok()??;
                (step.status == StepStatus::Failed).then_some(step)
            }
        })
        .await;
        assert!(failed.reason.unwrap().contains("for labels (none)"));
    }

    // A token made to accept forks: its runner takes the next fork run's step.
    let sandbox = runner_token(&store, "prod forks", zone.clone(), true).await;
    let fork_runner = session(&http, &url, &sandbox, "prod-forks", zone.clone(), None).await;
    let fork2 = support::start_pr_run(&engine.executor, repo, &plan, true).await;
    assert_eq!(poll(&http, &url, &prod_runner).await, None);
    assert_eq!(poll(&http, &url, &fork_runner).await, Some(fork2));
    // A runner may refuse forks its token allows.
    let refusing = session(&http, &url, &sandbox, "prod-no", zone, Some(false)).await;
    let fork3 = support::start_pr_run(&engine.executor, repo, &plan, true).await;
    assert_eq!(poll(&http, &url, &refusing).await, None);
    assert_eq!(poll(&http, &url, &fork_runner).await, Some(fork3));
    engine.shutdown().await;
}

/// With `--runner-listen`, the runner protocol is served there only, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_listener_serves_the_runner_protocol_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let engine = support::start_in_process_with_runner_listener(
        dir.path(),
        EngineConfig::new(SHARED.into()),
    )
    .await;
    assert_ne!(engine.url, engine.runner_url);
    let http = support::client();
    let register = |url: String, name: &'static str| {
        let http = http.clone();
        async move {
            support::register_labelled_runner(&http, &url, SHARED, name, json!({}), None)
                .await
                .status()
        }
    };
    assert_eq!(register(engine.url.clone(), "public").await, 404);
    assert_eq!(register(engine.runner_url.clone(), "runner").await, 200);
    for path in [
        "/api/runs",
        "/api/runners",
        "/metrics",
        "/healthz",
        "/",
        "/webhooks/github",
    ] {
        let status = http
            .get(format!("{}{path}", engine.runner_url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path} on the runner listener");
    }
    let api = http.get(format!("{}/api/runs", engine.url)).send().await;
    assert_eq!(
        api.unwrap().status(),
        200,
        "the public listener serves the API"
    );
    engine.shutdown().await;
}

/// `plue serve --runner-listen`: the local pool's runners reach the engine there (a run
/// succeeds though the public port refuses the runner protocol); `plue runner-token create`
/// makes tokens that refuse forks unless `--accept-forks`, and `list` says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_serve_runner_listen_and_runner_tokens_that_accept_forks() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("fork-fences");
    let runners = format!("127.0.0.1:{}", support::free_port());
    let runner_url = format!("http://{runners}");
    let engine = sandbox
        .serve_one_runner(
            "engine",
            "data",
            &[
                "--runner-listen",
                &runners,
                "--runner-token",
                support::RUNNER_TOKEN,
            ],
        )
        .await
        .url;
    let http = support::client();
    let source = "def workflow():\n    return Plan(name='fenced', triggers=[Trigger.manual()], \
                  steps=[Step.bash('hello', 'echo hello')])\n";
    let file = sandbox.write("ws/fenced.plue.py", source);
    let run_id = support::start_run(&http, &engine, &file, &sandbox.path("ws")).await;
    support::wait_succeeded(&http, &engine, run_id, Duration::from_secs(60)).await;
    let public = http
        .post(format!("{engine}{}", wire::REGISTER))
        .json(&json!({"name": "x", "ephemeral": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "the public port refuses the runner protocol"
    );
    let api = http.get(format!("{runner_url}/api/runs")).send().await;
    assert_eq!(api.unwrap().status(), 404, "the runner port serves no API");

    let create = |extra: &[&str]| {
        let mut args = vec!["runner-token", "create", "--labels", "zone=prod"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--server", &engine]);
        sandbox.plue_ok(&args).trim().to_string()
    };
    let refusing = create(&["--name", "prod"]);
    let accepting = create(&["--name", "prod forks", "--accept-forks"]);
    let listed = sandbox.plue_ok(&["runner-token", "list", "--server", &engine]);
    assert!(listed.contains("\tno-forks\tprod\t"), "{listed}");
    assert!(listed.contains("\tforks\tprod forks\t"), "{listed}");
    let zone = json!({"zone": "prod"});
    let register = |token: String, name: &'static str| {
        let (http, url, zone) = (http.clone(), runner_url.clone(), zone.clone());
        async move {
            support::register_labelled_runner(&http, &url, &token, name, zone, Some(true))
                .await
                .status()
        }
    };
    assert_eq!(register(refusing, "prod-1").await, 403);
    assert_eq!(register(accepting, "prod-2").await, 200);

    // Hand-started runners of the shared token accept forks unless told to refuse them.
    sandbox.runner("hand-open", &runner_url, &[]);
    sandbox.runner("hand-walled", &runner_url, &["--refuse-forks"]);
    let said = support::wait_for(Duration::from_secs(30), "both runners", || async {
        let runners = support::get_json(&http, &format!("{engine}/api/runners")).await;
        let said = |name: &str| {
            let runners = runners.as_array()?;
            let runner = runners.iter().find(|r| r["name"] == name)?;
            runner["accept_forks"].as_bool()
        };
        Some((said("hand-open")?, said("hand-walled")?, said("prod-2")?))
    })
    .await;
    assert_eq!(said, (true, false, true));
}
