//! `/api/openapi.json` against a live `plue serve`: the document is served without a token
//! even with `--private-reads`, and schemathesis (pinned, from PyPI, in its own virtual
//! environment built by `deploy/python.rs`) fuzzes every operation it lists with the admin
//! token, asserting no 5xx and that every answer — status, content type, headers, body —
//! is one the document declares. The engine holds what the document's examples name (the
//! repository `octo/hello` with a secret `DEPLOY_KEY`, run 1 waiting at its approval step
//! `gate`), so requests reach past "not found" into the handlers.
//!
//! Like the chart and metrics tests, a schemathesis that cannot be installed fails the test
//! with what pip said; it never skips.

#[path = "deploy/python.rs"]
#[allow(dead_code)]
mod python;
#[allow(dead_code)]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{client, free_port, start_run, wait_for, Sandbox, ADMIN_TOKEN};

/// The schemathesis the checks and flags below were written for.
const SCHEMATHESIS: &[&str] = &["schemathesis==4.32.5"];

/// Test cases per operation and phase: enough to walk every operation's statuses and
/// malformed inputs, few enough that the run takes well under two minutes on two cores.
const MAX_EXAMPLES: &str = "40";

/// Checks that cannot apply to this API, each with why (everything else of `--checks all`
/// runs):
/// - `use_after_free`, `ensure_resource_availability`: stateful checks that follow OpenAPI
///   links from a created resource to its reads and deletes; the document declares no
///   links, so they have nothing to check.
/// - `positive_data_acceptance`: it expects every schema-valid request to succeed, but
///   much of what the handlers check cannot be a JSON Schema: a path must lie below
///   `--local-workflows` and exist on the server, a branch must be a valid git ref, a
///   repository or run must exist, a secret needs `PLUE_SECRET_KEY`. Those answers are
///   4xx by design, and each is declared with its status.
const EXCLUDED_CHECKS: &str = "use_after_free,ensure_resource_availability,positive_data_acceptance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_the_document_does_not_declare() {
    let _serial = support::serial().await;
    let venv = tokio::task::spawn_blocking(|| python::venv("schemathesis-venv", SCHEMATHESIS))
        .await
        .expect("building the schemathesis environment");
    let sandbox = Sandbox::new("openapi");
    let data = sandbox.path("data");
    let engine = sandbox
        .serve(
            "engine",
            free_port(),
            // Reads need the token too, so schemathesis sees every 401 a read declares.
            &["--data-dir", data.to_str().unwrap(), "--private-reads"],
        )
        .await;

    // The document itself needs no token, even with private reads.
    let anonymous = reqwest::get(format!("{}/api/openapi.json", engine.url))
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(anonymous.status(), 200);
    let document: serde_json::Value = anonymous.json().await.expect("a JSON document");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{document:#}"
    );

    seed(&sandbox, &engine.url).await;

    let report = sandbox.path("schemathesis");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking({
        let url = engine.url.clone();
        let python = venv.join("bin/python");
        let report = report.clone();
        move || {
            Command::new(python)
                .args(["-m", "schemathesis.cli", "--no-color", "run"])
                .arg(format!("{url}/api/openapi.json"))
                .args(["--url", &url])
                .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
                .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                .args(["--max-examples", MAX_EXAMPLES])
                .args(["--seed", "1", "--workers", "1"])
                .args(["--request-timeout", "10"])
                .args(["--generation-database", "none"])
                .arg("--report-dir")
                .arg(&report)
                .current_dir(&report.parent().unwrap())
                .env("NO_COLOR", "1")
                .output()
                .expect("starting schemathesis")
        }
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture, and with any failure below.
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}, after {elapsed:?}):\n{stdout}\n{stderr}\n{}",
        output.status,
        sandbox.diagnostics()
    );
    // It tested every operation the document lists, but the one that serves the document
    // (schemathesis leaves that out; it was read above).
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| *path != "/api/openapi.json")
        .map(|(_, item)| item.as_object().unwrap().len())
        .sum();
    assert!(
        stdout.contains(&format!("{operations} selected / {operations} total")),
        "schemathesis did not test all {operations} operations:\n{stdout}"
    );
    assert!(
        elapsed < Duration::from_secs(120),
        "schemathesis took {elapsed:?}"
    );
}

/// Registers what the document's examples name: the repository `octo/hello` and its secret
/// `DEPLOY_KEY`, a runner token, and run 1, whose step `hello` ran and whose approval step
/// `gate` waits.
async fn seed(sandbox: &Sandbox, engine: &str) {
    let client = client();
    post(&client, engine, "/api/repos", json!({
        "name": "octo/hello", "clone_url": "file:///nonexistent/hello.git",
        "forge": "github", "webhook_secret": "webhook-secret-of-octo",
    }))
    .await;
    let response = client
        .put(format!("{engine}/api/repos/octo/hello/secrets/DEPLOY_KEY"))
        .json(&json!({"value": "s3cret"}))
        .send()
        .await
        .expect("PUT a secret");
    assert_eq!(response.status(), 204);
    post(&client, engine, "/api/runner-tokens", json!({"name": "seeded"})).await;
    let workflow = sandbox.write(
        "ws/hello.plue.py",
        "def workflow():\n    return Plan(name='hello', triggers=[Trigger.manual()], steps=[\n\
         \x20       Step.bash('hello', 'echo hello; echo world >&2'),\n\
         \x20       Step.approval('gate', message='ship it?', depends_on=['hello']),\n    ])\n",
    );
    let run_id = start_run(&client, engine, &workflow, workflow.parent().unwrap()).await;
    assert_eq!(run_id, 1, "the document's examples name run 1");
    wait_for(Duration::from_secs(30), "run 1 to wait at its gate", || async {
        let run: serde_json::Value = client
            .get(format!("{engine}/api/runs/1"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (run["status"] == "waiting").then_some(())
    })
    .await;
}

async fn post(client: &reqwest::Client, engine: &str, path: &str, body: serde_json::Value) {
    let response = client
        .post(format!("{engine}{path}"))
        .json(&body)
        .send()
        .await
        .expect("a seeding request");
    assert!(response.status().is_success(), "{path}: {}", response.status());
}
