//! `/api/openapi.json` against a live `plue serve`, with reads open and with
//! `--private-reads`: the document is served without a token either way, and schemathesis
//! (pinned, from PyPI, in its own virtual environment built by `deploy/python.rs`) fuzzes
//! every operation it lists with the admin token, asserting no 5xx and that every answer —
//! status, content type, headers, body — is one the document declares. The engine holds
//! what the document's examples name (the repository `octo/hello` with a secret
//! `DEPLOY_KEY`, run 1 waiting at its approval step `gate`), so requests reach past "not
//! found" into the handlers.
//!
//! Like the chart and metrics tests, a schemathesis that cannot be installed fails the test
//! with what pip said; it never skips.

use crate::python;
use crate::support;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{client, start_run, wait_for, Sandbox, ADMIN_TOKEN};
use serde_json::json;

/// The schemathesis the checks and flags below were written for.
const SCHEMATHESIS: &[&str] = &["schemathesis==4.32.5"];

/// Test cases per operation and phase: enough to walk every operation's statuses and
/// malformed inputs, few enough that the run takes well under two minutes on two cores.
const MAX_EXAMPLES: &str = "40";

/// The seed and the examples per operation: [`MAX_EXAMPLES`] and seed 1, unless
/// `PLUE_SCHEMATHESIS_EXAMPLES` or `PLUE_SCHEMATHESIS_SEED` set others (a wider search by
/// hand, e.g. seed 9 with 150 examples; the time bound grows with the examples).
fn search() -> (String, String) {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    (
        var("PLUE_SCHEMATHESIS_EXAMPLES", MAX_EXAMPLES),
        var("PLUE_SCHEMATHESIS_SEED", "1"),
    )
}

/// The schemathesis configuration: `--checks all` but what cannot apply.
///
/// Checks off, each with why:
/// - `use_after_free`, `ensure_resource_availability`: stateful checks that follow OpenAPI
///   links from a created resource to its reads and deletes; the document declares no
///   links, so they have nothing to check.
///
/// Every other check holds on every operation, with schemathesis's own statuses: no 5xx
/// (`not_a_server_error`), and no schema-valid request refused with 400 or 422
/// (`positive_data_acceptance`) — the document carries every rule a handler enforces
/// (patterns, lengths, bounds, integer types, enums, the branch-glob syntax of an
/// environment's `allowed_refs`, a debug window's `cols` and `rows` together), and what
/// it allows the handlers take (issue 54: a negative or huge `limit`, a cursor, a log
/// cursor past an i64 or of digits alone, an empty `ref` or default branch, a hostless or
/// unclean URL, empty or unclean labels, control or format characters in a comment or a
/// token's name, a blank name or webhook secret, a glob that did not compile were all
/// refused though the document allowed them; a repository that could not be fetched was
/// a 502 — a 409 now, saying why).
/// The stateful phase does not run `positive_data_acceptance`: it fills a later request's
/// path from an earlier answer by guessing (the document declares no links) — it put a
/// created repository's `owner/name` into `{name}`, which the parameter's own pattern
/// refuses — so its requests are not schema-valid.
const CONFIG: &str = "[checks]\nenabled = true\nuse_after_free.enabled = false\n\
                      ensure_resource_availability.enabled = false\n\n\
                      [phases.stateful.checks.positive_data_acceptance]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_the_document_does_not_declare() {
    let _serial = support::serial().await;
    let venv = tokio::task::spawn_blocking(|| python::venv("schemathesis-venv", SCHEMATHESIS))
        .await
        .expect("building the schemathesis environment");
    // Both ways reads can be: open (the default: admin-only reads answer without the
    // middleware) and private (every read meets the middleware's 401 first).
    for private_reads in [false, true] {
        fuzz(&venv, private_reads).await;
    }
}

async fn fuzz(venv: &std::path::Path, private_reads: bool) {
    let sandbox = Sandbox::new("openapi");
    let data = sandbox.path("data");
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    if private_reads {
        args.push("--private-reads");
    }
    let engine = sandbox.serve_engine(&args).await;

    // The document itself needs no token, even with private reads.
    let anonymous = reqwest::get(format!("{}/api/openapi.json", engine.url))
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(anonymous.status(), 200);
    let document: serde_json::Value = anonymous.json().await.expect("a JSON document");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{document:#}"
    );

    seed(&sandbox, &engine.url).await;
    logs_fit_the_document(&engine.url, &document).await;

    // In the sandbox, so nothing it might write lands in the source tree.
    let workdir = sandbox.path("schemathesis");
    std::fs::create_dir_all(&workdir).unwrap();
    let config_file = workdir.join("schemathesis.toml");
    std::fs::write(&config_file, CONFIG).unwrap();
    let (examples, fuzz_seed) = search();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking({
        let (examples, fuzz_seed) = (examples.clone(), fuzz_seed.clone());
        let url = engine.url.clone();
        let python = venv.join("bin/python");
        move || {
            Command::new(python)
                .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
                .arg(&config_file)
                .arg("run")
                .arg(format!("{url}/api/openapi.json"))
                .args(["--url", &url])
                .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                // A fixed seed: a finding reproduces run after run.
                .args(["--max-examples", &examples, "--seed", &fuzz_seed])
                .args(["--workers", "1", "--request-timeout", "10"])
                .args(["--generation-database", "none"])
                .current_dir(&workdir)
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
    assert!(
        output.status.success(),
        "schemathesis found problems (private reads: {private_reads}; seed {fuzz_seed}, {examples} \
         examples; {}, after {elapsed:?}):\n{stdout}\n{stderr}\n{}",
        output.status,
        sandbox.diagnostics()
    );
    // What it tested, for `--nocapture`.
    println!("{stdout}");
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
    let examples: u64 = examples.parse().expect("a number of examples");
    let bound = Duration::from_secs(120 * examples.div_ceil(40).max(1));
    assert!(
        elapsed < bound,
        "schemathesis took {elapsed:?} ({examples} examples)"
    );
}

/// Registers what the document's examples name: the repository `octo/hello` (its origin a
/// local git repository with a manual workflow) and its secret
/// `DEPLOY_KEY`, a runner token, and run 1, whose step `hello` ran and whose approval step
/// `gate` waits.
async fn seed(sandbox: &Sandbox, engine: &str) {
    let client = client();
    // A reachable origin, so a dispatch reads its files and reaches past the 409 of a
    // repository that cannot be fetched into evaluation.
    let origin = sandbox.path("origin");
    let hello = "def workflow():\n    return Plan(name='hello', triggers=[Trigger.manual()], \
                 steps=[Step.bash('hello', 'true')])\n";
    support::git_repo(&origin, &[(".plue/hello.plue.py", hello)]);
    post(
        &client,
        engine,
        "/api/repos",
        json!({
            "name": "octo/hello", "clone_url": format!("file://{}", origin.display()),
            "forge": "github", "webhook_secret": "webhook-secret-of-octo",
        }),
    )
    .await;
    let response = client
        .put(format!("{engine}/api/repos/octo/hello/secrets/DEPLOY_KEY"))
        .json(&json!({"value": "s3cret"}))
        .send()
        .await
        .expect("PUT a secret");
    assert_eq!(response.status(), 204);
    post(
        &client,
        engine,
        "/api/runner-tokens",
        json!({"name": "seeded"}),
    )
    .await;
    let workflow = sandbox.write(
        "ws/hello.plue.py",
        "def workflow():\n    return Plan(name='hello', triggers=[Trigger.manual()], steps=[\n\
         \x20       Step.bash('hello', 'echo hello; echo world >&2'),\n\
         \x20       Step.approval('gate', message='ship it?', depends_on=['hello']),\n    ])\n",
    );
    let run_id = start_run(&client, engine, &workflow, workflow.parent().unwrap()).await;
    assert_eq!(run_id, 1, "the document's examples name run 1");
    wait_for(
        Duration::from_secs(30),
        "run 1 to wait at its gate",
        || async {
            let run = support::run_view(&client, engine, 1).await?;
            (run["status"] == "waiting").then_some(())
        },
    )
    .await;
}

async fn post(client: &reqwest::Client, engine: &str, path: &str, body: serde_json::Value) {
    let response = client
        .post(format!("{engine}{path}"))
        .json(&body)
        .send()
        .await
        .expect("a seeding request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

/// The logs operation's two answers, which schemathesis cannot read (it validates JSON
/// bodies only): JSON lines, each a `LineView` with exactly its properties, and an SSE
/// stream of `line` events carrying the same, closed by `end`.
async fn logs_fit_the_document(engine: &str, document: &serde_json::Value) {
    let operation = &document["paths"]["/api/runs/{id}/steps/{step}/logs"]["get"];
    let content = &operation["responses"]["200"]["content"];
    assert!(content["application/x-ndjson"].is_object(), "{operation:#}");
    assert!(content["text/event-stream"].is_object(), "{operation:#}");
    let line = &document["components"]["schemas"]["LineView"];
    let mut declared: Vec<&str> = line["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    declared.sort_unstable();
    let fits = |text: &str| {
        let value: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, declared, "{text}");
    };
    let url = format!("{engine}/api/runs/1/steps/hello/logs");
    let lines = client().get(&url).send().await.expect("GET logs");
    assert_eq!(lines.status(), 200);
    assert_eq!(lines.headers()["content-type"], "application/x-ndjson");
    let text = lines.text().await.unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    text.lines().for_each(fits);

    let stream = client()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET logs as SSE");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The step is final: the stream ends by itself.
    let body = tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream of a final step ends")
        .unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .collect();
    assert_eq!(data.len(), 3, "two lines and the end:\n{body}");
    data[..2].iter().copied().for_each(fits);
    assert!(
        body.contains("event: end") || body.contains("event:end"),
        "{body}"
    );
}
