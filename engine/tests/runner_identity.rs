//! Runner identities against the real `plue` binary, played as an attacker holding a valid
//! registration token: squatting a busy pool runner's name and deregistering, announcing
//! labels its token does not grant — and the operator's side: `plue runner-token create`,
//! a hand-started runner reading its token from a file, `list` and `revoke`.

use std::time::Duration;

use crate::support::{client, get_json, serial, start_run, wait_for, wait_succeeded, Sandbox};
use serde_json::{json, Value};

const RUNNER_TOKEN: &str = "runner-identity-test-token";

fn workflow(steps: &[&str]) -> String {
    let mut source = String::from(
        "def workflow():\n    return Plan(name='ids', triggers=[Trigger.manual()], steps=[\n",
    );
    for step in steps {
        source.push_str(&format!("        {step},\n"));
    }
    source.push_str("    ])\n");
    source
}

/// `POST /internal/runners/register` with `token`: the status and the answer.
async fn register(engine: &str, token: &str, name: &str, labels: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{engine}/internal/runners/register"))
        .bearer_auth(token)
        .json(&json!({"name": name, "labels": labels, "ephemeral": true}))
        .send()
        .await
        .expect("register");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

// regression: registering under a busy pool runner's name (names are public in GET
// /api/runners) and deregistering made the pool stop the real runner mid-step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_runner_cannot_be_squatted_or_stopped_by_name() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("squat");
    let engine = sandbox
        .serve_local("1", &["--runner-token", RUNNER_TOKEN])
        .await
        .url;
    let http = client();
    let source = workflow(&["Step.bash('slow', 'sleep 2; echo finished')"]);
    let file = sandbox.write("ws/ids.plue.py", &source);
    let run_id = start_run(&http, &engine, &file, &sandbox.path("ws")).await;
    let busy: String = wait_for(Duration::from_secs(30), "a busy pool runner", || async {
        let runners = get_json(&http, &format!("{engine}/api/runners")).await;
        runners.as_array()?.iter().find_map(|r| {
            (r["state"] == "busy").then(|| r["name"].as_str().unwrap_or_default().to_string())
        })
    })
    .await;
    assert!(busy.starts_with("pool-"), "{busy}");

    // With the shared token and with a scoped one the operator made: refused either way.
    let scoped = sandbox.plue_ok(&["runner-token", "create", "--server", &engine]);
    let scoped = scoped.trim();
    for token in [RUNNER_TOKEN, scoped] {
        let (status, answer) = register(&engine, token, &busy, json!({})).await;
        assert_eq!(status, 403, "{answer}");
    }
    // The attacker's own runner comes and goes; the pool's is untouched.
    let (status, answer) = register(&engine, scoped, "squatter", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["session_token"].as_str().unwrap().to_string();
    let left = reqwest::Client::new()
        .post(format!("{engine}/internal/runners/deregister"))
        .bearer_auth(&session)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 200);
    wait_succeeded(&http, &engine, run_id, Duration::from_secs(60)).await;
}

// The attacker holds a token the operator made for dev runners and announces zone=prod to
// get the production step (and its secret); the runner the operator meant for prod, started
// by hand with its token in a file, takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_runner_whose_token_grants_prod_runs_the_prod_step() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("labels");
    let extra = [
        "--runner-token",
        RUNNER_TOKEN,
        "--secret",
        "DEPLOY_KEY=prod-deploy-key",
    ];
    let engine = sandbox.serve_local("0", &extra).await.url;
    let http = client();
    let dev = sandbox.plue_ok(&[
        "runner-token",
        "create",
        "--labels",
        "zone=dev",
        "--server",
        &engine,
    ]);
    let prod = sandbox.plue_ok(&[
        "runner-token",
        "create",
        "--labels",
        "zone=prod",
        "--name",
        "prod",
        "--server",
        &engine,
    ]);
    for token in [dev.trim(), RUNNER_TOKEN] {
        let (status, answer) = register(&engine, token, "hopper", json!({"zone": "prod"})).await;
        assert_eq!(status, 403, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("zone=prod"),
            "{answer}"
        );
    }

    let source = workflow(&[
        "Step.bash('deploy', 'test -n \"$DEPLOY_KEY\" && echo deployed', runner={'zone': 'prod'}, secrets=['DEPLOY_KEY'])",
    ]);
    let file = sandbox.write("ws/ids.plue.py", &source);
    let run_id = start_run(&http, &engine, &file, &sandbox.path("ws")).await;
    let token_file = sandbox.path("prod.token");
    std::fs::write(&token_file, prod.trim()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let work = sandbox.path("work-prod");
    sandbox.spawn(
        "prod-runner",
        sandbox.plue(&[
            "runner",
            "--engine",
            &engine,
            "--token-file",
            token_file.to_str().unwrap(),
            "--labels",
            "zone=prod",
            "--name",
            "prod-1",
            "--work-dir",
            work.to_str().unwrap(),
            "--ephemeral",
        ]),
    );
    sandbox
        .wait_succeeded(&http, &engine, run_id, Duration::from_secs(60))
        .await;

    // Listed without the token; revoked, it registers nothing more.
    let listed = sandbox.plue_ok(&["runner-token", "list", "--server", &engine]);
    assert!(
        listed.contains("zone=prod") && listed.contains("zone=dev"),
        "{listed}"
    );
    assert!(!listed.contains(prod.trim()), "{listed}");
    let id = listed
        .lines()
        .find(|line| line.contains("zone=prod"))
        .and_then(|line| line.split('\t').next())
        .unwrap()
        .to_string();
    sandbox.plue_ok(&["runner-token", "revoke", &id, "--server", &engine]);
    let (status, answer) = register(&engine, prod.trim(), "prod-2", json!({"zone": "prod"})).await;
    assert_eq!(status, 401, "{answer}");
}
