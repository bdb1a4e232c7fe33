//! `/metrics`, `/readyz` and SIGTERM on a live `plue serve`: the exposition after a run with
//! a success, a failure and a skip, webhook deliveries of every kind, parsed by the
//! Prometheus Python client's strict OpenMetrics parser; and a drain that fails readiness,
//! answers held polls, claims nothing new and exits cleanly.

use crate::python;
use crate::support;
use std::time::{Duration, Instant};

use crate::support::{
    client, deliver_webhook, free_port, start_run, wait_final, Sandbox, RUNNER_TOKEN,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "metrics-test-webhook-secret";

/// The families of a `/metrics` answer, as the Python parser read them.
struct Families(Value);

impl Families {
    async fn scrape(engine: &str) -> Families {
        let response = reqwest::get(format!("{engine}/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let parsed = python::run_script("parse_metrics.py", &[], text.as_bytes());
        assert!(
            parsed.status.success(),
            "the OpenMetrics parser refused /metrics: {}\n{text}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        Families(serde_json::from_slice(&parsed.stdout).expect("the parser's JSON"))
    }

    fn family(&self, name: &str) -> &Value {
        let family = &self.0[name];
        assert!(!family.is_null(), "no family {name} in {:#}", self.0);
        family
    }

    /// The value of the sample `name` whose labels include `labels` (0 when none).
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.family(family)["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|sample| sample[0] == name)
            .filter(|sample| labels.iter().all(|(k, v)| sample[1][*k] == *v))
            .map(|sample| sample[2].as_f64().unwrap())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_engine_exports_parseable_metrics_after_runs_failures_and_deliveries() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("metrics");
    let workflow = sandbox.write_workflow(
        "observed",
        &[
            "Step.bash('hello', 'echo hello; echo world')",
            "Step.bash('broken', 'echo failing; exit 3')",
            "Step.bash('after', 'true', depends_on=['broken'])",
        ],
    );
    let engine = sandbox
        .serve_local("1", &["--runner-token", RUNNER_TOKEN])
        .await;
    let url = engine.url.as_str();
    let http = client();

    let run_id = start_run(&http, url, &workflow, &sandbox.path("ws")).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run:#}");

    // Deliveries: to an unknown repository, then a registered one's ping, twice.
    let ping = json!({"zen": "ok", "repository": {"full_name": "acme/app"}});
    let deliver = |id: &'static str| {
        let ping = ping.clone();
        async move {
            deliver_webhook(url, "github", "ping", id, &ping, WEBHOOK_SECRET)
                .await
                .0
        }
    };
    assert_eq!(deliver("before-registration").await, 401);
    let registered = http
        .post(format!("{url}/api/repos"))
        .json(
            &json!({"name": "acme/app", "clone_url": "/nonexistent/acme/app.git",
                      "forge": "github", "webhook_secret": WEBHOOK_SECRET}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        201,
        "{}",
        registered.text().await.unwrap()
    );
    assert_eq!(deliver("ping-1").await, 200);
    assert_eq!(deliver("ping-1").await, 200);

    let metrics = Families::scrape(url).await;
    let steps = "plue_steps_finished";
    let total = "plue_steps_finished_total";
    for (status, count) in [("succeeded", 1.0), ("failed", 1.0), ("skipped", 1.0)] {
        assert_eq!(
            metrics.value(steps, total, &[("status", status), ("kind", "bash")]),
            count,
            "{status} steps"
        );
    }
    assert_eq!(metrics.family(steps)["type"], "counter");
    let runs = metrics.value(
        "plue_runs_finished",
        "plue_runs_finished_total",
        &[("status", "failed")],
    );
    assert_eq!(runs, 1.0);
    let duration = metrics.family("plue_step_duration_seconds");
    assert_eq!(
        (&duration["type"], &duration["unit"]),
        (&json!("histogram"), &json!("seconds"))
    );
    let timed = metrics.value(
        "plue_step_duration_seconds",
        "plue_step_duration_seconds_count",
        &[],
    );
    assert_eq!(
        timed, 2.0,
        "the two steps that ran are timed, the skipped one is not"
    );
    let waited = "plue_step_ready_to_started_seconds";
    assert_eq!(metrics.value(waited, &format!("{waited}_count"), &[]), 2.0);
    let lines = metrics.value(
        "plue_log_lines_ingested",
        "plue_log_lines_ingested_total",
        &[],
    );
    assert!(lines >= 3.0, "log lines: {lines}");
    let evaluated = metrics.value(
        "plue_evaluations",
        "plue_evaluations_total",
        &[("result", "ok")],
    );
    assert_eq!(evaluated, 1.0);
    let eval_seconds = "plue_evaluation_duration_seconds";
    assert_eq!(
        metrics.value(eval_seconds, &format!("{eval_seconds}_count"), &[]),
        1.0
    );
    let deliveries = |result| {
        metrics.value(
            "plue_webhook_deliveries",
            "plue_webhook_deliveries_total",
            &[("forge", "github"), ("result", result)],
        )
    };
    assert_eq!(
        (
            deliveries("unauthorized"),
            deliveries("accepted"),
            deliveries("duplicate")
        ),
        (1.0, 1.0, 1.0)
    );
    let requests = "plue_http_requests";
    let route_hits = metrics.value(
        requests,
        "plue_http_requests_total",
        &[
            ("method", "GET"),
            ("route", "/api/runs/{id}"),
            ("status", "200"),
        ],
    );
    assert!(route_hits >= 1.0, "GET /api/runs/{{id}} by its template");
    let created = metrics.value(
        requests,
        "plue_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/runs"),
            ("status", "201"),
        ],
    );
    let created_200 = metrics.value(
        requests,
        "plue_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/runs"),
            ("status", "200"),
        ],
    );
    assert_eq!(created + created_200, 1.0, "one POST /api/runs");
    let http_seconds = "plue_http_request_duration_seconds";
    assert!(metrics.value(http_seconds, &format!("{http_seconds}_count"), &[]) >= 3.0);
    assert_eq!(metrics.value("plue_draining", "plue_draining", &[]), 0.0);
    // The local pool's warm runner (its ephemeral predecessor may just have left), as the
    // pool counts it and as the store holds it.
    support::wait_for(
        Duration::from_secs(20),
        "a warm runner in /metrics",
        || async {
            let metrics = Families::scrape(url).await;
            let pool = metrics.value(
                "plue_pool_runners",
                "plue_pool_runners",
                &[("class", "local")],
            );
            // Any labels: a local runner announces the network policies it can enforce
            // (`plue.network/...`) besides the labels it was given (none here).
            let live = match metrics.0.get("plue_runners") {
                Some(_) => metrics.value("plue_runners", "plue_runners", &[]),
                None => 0.0,
            };
            (pool >= 1.0 && live >= 1.0).then_some(())
        },
    )
    .await;
    // No series is named after a raw path: probes of unknown paths share one label.
    let probe = reqwest::get(format!("{url}/no/such/path/12345"))
        .await
        .unwrap();
    assert_eq!(probe.status(), 404);
    let again = Families::scrape(url).await;
    let samples = again.family(requests)["samples"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        samples
            .iter()
            .all(|s| !s[1]["route"].as_str().unwrap().contains("12345")),
        "{samples:?}"
    );
    assert!(
        again.value(
            requests,
            "plue_http_requests_total",
            &[("route", "unmatched")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_answers_held_polls_and_claims_nothing_new() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("drain");
    let workflow = sandbox.write_workflow("waiting", &["Step.bash('queued', 'true')"]);
    let extra = [
        "--runner-token",
        RUNNER_TOKEN,
        "--drain-delay",
        "3",
        "--shutdown-grace",
        "10",
    ];
    let engine = sandbox.serve_local("0", &extra).await;
    let url = engine.url.clone();
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "ready before the signal");

    let http = reqwest::Client::new();
    let registered: Value = support::send_json(
        http.post(format!("{url}{}", plue_types::protocol::REGISTER))
            .bearer_auth(RUNNER_TOKEN)
            .json(&json!({"name": "drain-test", "labels": {}, "ephemeral": false})),
    )
    .await;
    let session = registered["session_token"]
        .as_str()
        .expect("a session token")
        .to_owned();
    let poll = |wait_ms: u64| {
        let (http, url, session) = (http.clone(), url.clone(), session.clone());
        async move {
            let response = http
                .post(format!("{url}{}", plue_types::protocol::POLL))
                .bearer_auth(session)
                .json(&json!({"wait_ms": wait_ms}))
                .send()
                .await
                .expect("the poll is answered, not cut");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    // A poll held by the engine (no work yet) when the signal arrives.
    let held = tokio::spawn(poll(20_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(Pid::from_raw(engine.pid as i32), Signal::SIGTERM).unwrap();
    let signalled = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(3), held)
        .await
        .expect("the held poll is answered at once")
        .unwrap();
    assert_eq!(answer["assignment"], Value::Null);

    let unready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(unready.status(), 503);
    assert_eq!(unready.text().await.unwrap().trim(), "draining");
    // Work queued while draining is left for the other replicas.
    let run_id = start_run(&client(), &url, &workflow, &sandbox.path("ws")).await;
    let answer = poll(1_000).await;
    assert_eq!(
        answer["assignment"],
        Value::Null,
        "a draining engine claimed {answer}"
    );
    let run = support::run_view(&client(), &url, run_id)
        .await
        .expect("the run");
    assert_eq!(support::step(&run, "queued")["status"], "queued");
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.lines().any(|l| l == "plue_draining 1"), "{metrics}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the drain delay passed mid-test"
    );

    let status = sandbox.wait_exit(engine.pid, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", sandbox.diagnostics());
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "stopped before the drain delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_run_and_step_ids() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("json-logs");
    let workflow = sandbox.write_workflow(
        "logged",
        &[
            "Step.bash('first', 'echo one')",
            "Step.bash('second', 'exit 1', depends_on=['first'])",
        ],
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (data, root) = (sandbox.path("data"), sandbox.path(""));
    let mut command = sandbox.plue(&[
        "serve",
        "--log-format",
        "json",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
        "--runners",
        "1",
        "--runner-token",
        RUNNER_TOKEN,
        "--local-workflows",
        root.to_str().unwrap(),
        "--pass-env",
        "PLUE_TEST_SANDBOX",
    ]);
    command.env("PLUE_LOG", "info");
    let pid = sandbox.spawn("engine", command);
    let url = format!("http://{listen}");
    let http = client();
    support::wait_for(Duration::from_secs(30), "the engine", || async {
        let health = http.get(format!("{url}/healthz")).send().await.ok()?;
        health.status().is_success().then_some(())
    })
    .await;
    let run_id = start_run(&http, &url, &workflow, &sandbox.path("ws")).await;
    let run = wait_final(&http, &url, run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    assert!(sandbox
        .wait_exit(pid, Duration::from_secs(30))
        .await
        .success());

    let stderr = std::fs::read_to_string(sandbox.path("engine.err")).unwrap();
    let events: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}"));
            assert!(
                event.is_object() && event["fields"]["message"].is_string(),
                "{line}"
            );
            event
        })
        .collect();
    let said = |message: &str| {
        events
            .iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(message)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(said("plue engine listening on").len(), 1, "{stderr}");
    assert!(!said("draining").is_empty(), "{stderr}");
    let steps: Vec<(String, String)> = said("step finished")
        .iter()
        .filter(|e| e["fields"]["run_id"] == run_id)
        .map(|e| {
            let f = &e["fields"];
            (
                f["step"].as_str().unwrap().into(),
                f["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        steps.contains(&("first".into(), "succeeded".into())),
        "{steps:?}\n{stderr}"
    );
    assert!(
        steps.contains(&("second".into(), "failed".into())),
        "{steps:?}"
    );
    let runs = said("run finished");
    assert!(
        runs.iter()
            .any(|e| e["fields"]["run_id"] == run_id && e["fields"]["status"] == "failed"),
        "{stderr}"
    );
}
