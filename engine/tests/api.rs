//! The HTTP surfaces of an in-process engine on `127.0.0.1:0`, driven over real HTTP: a
//! scripted runner speaking the internal protocol, the logs API as JSON lines and as SSE
//! resumed from `Last-Event-ID`, cancellation reaching the runner, and admin-token writes.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::server::{self, EngineConfig, RunningEngine};
use engine::store::{NewRun, Store};
use evaluator::plan::{Action, Plan, Step};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use runner::protocol::{self as wire, LogBatch, LogLine, Stream, WorkspaceSource};
use serde_json::{json, Value};

const REGISTRATION: &str = "registration-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

struct Harness {
    engine: RunningEngine,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = EngineConfig::new(REGISTRATION.into());
    config.admin_token = Some(ADMIN.into());
    let engine = server::start(store, listener, config, None).await.unwrap();
    Harness {
        engine,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.engine.url)
    }

    async fn start_run(&self, steps: Vec<Step>) -> i64 {
        let plan = Plan {
            name: "api".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps,
        };
        let json = serde_json::to_string(&plan).unwrap();
        self.engine
            .executor
            .start_run(&NewRun {
                workflow_source: "local",
                workflow_path: "/w/api.plue.py",
                event: "manual",
                git_ref: "refs/heads/main",
                sha: "0",
                context_json: "{}",
                plan: &plan,
                plan_json: &json,
                plan_hash: "h",
                workspace: &WorkspaceSource::Empty,
                rerun_of: None,
                repo: None,
            })
            .await
            .unwrap()
    }

    /// Registers a runner; returns its session token.
    async fn register(&self, name: &str) -> String {
        let response: wire::RegisterResponse = self
            .http
            .post(self.url(wire::REGISTER))
            .bearer_auth(REGISTRATION)
            .json(&json!({"name": name, "labels": {}, "ephemeral": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response.session_token
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn poll(&self, token: &str) -> wire::Assignment {
        let response: wire::PollResponse = self
            .post(token, wire::POLL, json!({"wait_ms": 5000}))
            .await
            .json()
            .await
            .unwrap();
        response.assignment.expect("an assignment")
    }

    async fn send_lines(&self, token: &str, attempt: i64, seqs: std::ops::RangeInclusive<u64>) {
        let batch = LogBatch {
            lines: seqs
                .map(|seq| LogLine {
                    seq,
                    stream: Stream::Stdout,
                    text: format!("line {seq}"),
                    ts_ms: 1,
                })
                .collect(),
        };
        let response = self
            .post(
                token,
                &wire::logs_path(attempt),
                serde_json::to_value(batch).unwrap(),
            )
            .await;
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }
}

fn bash(id: &str, command: &str) -> Step {
    Step::new(
        id,
        Action::Bash {
            command: command.into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_runner_runs_a_step_and_sse_resumes_exactly() {
    let h = harness().await;
    let run_id = h.start_run(vec![bash("build", "echo hi")]).await;
    let token = h.register("scripted").await;
    let assignment = h.poll(&token).await;
    assert_eq!(assignment.step_id, "build");
    assert_eq!(assignment.env["PLUE_ATTEMPT"], "1");
    let attempt = assignment.attempt_id;
    h.post(&token, &wire::started_path(attempt), json!({}))
        .await;
    h.send_lines(&token, attempt, 1..=100).await;
    // A resend of lines already stored (a runner retrying) must not duplicate them.
    h.send_lines(&token, attempt, 90..=100).await;

    // Follow over SSE, resuming after line 40 as a reconnecting browser would.
    let response = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}/steps/build/logs")))
        .header("accept", "text/event-stream")
        .header("last-event-id", "1:40")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    while seen.len() < 60 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(event.id.clone());
    }
    // Live lines arrive on the open stream; then the step ends and so does the stream.
    h.send_lines(&token, attempt, 101..=150).await;
    let done = h
        .post(
            &token,
            &wire::complete_path(attempt),
            json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "outputs": {"k": "v"}, "lines": 150}),
        )
        .await;
    assert!(done.status().is_success());
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if event.event == "end" {
            break;
        }
        seen.push(event.id.clone());
    }
    let expected: Vec<String> = (41..=150).map(|seq| format!("1:{seq}")).collect();
    assert_eq!(seen, expected);

    // The same lines as JSON lines.
    let body = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}/steps/build/logs")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[149]["text"], "line 150");

    let run: Value = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["steps"][0]["outputs"]["k"], "v");
    assert_eq!(run["steps"][0]["attempts"], 1);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_through_the_api_reaches_the_runner() {
    let h = harness().await;
    let run_id = h.start_run(vec![bash("long", "sleep 100")]).await;
    let token = h.register("cancellable").await;
    let assignment = h.poll(&token).await;
    let watch = {
        let http = h.http.clone();
        let url = h.url(&wire::watch_path(assignment.attempt_id));
        let token = token.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json::<wire::WatchResponse>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/api/runs/{run_id}/cancel");
    let unauthorized = h.http.post(h.url(&path)).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let wrong = h
        .http
        .post(h.url(&path))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let cancelled = h
        .http
        .post(h.url(&path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let answer = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.cancel,
        "the held watch returns as soon as the run is cancelled"
    );
    h.post(
        &token,
        &wire::complete_path(assignment.attempt_id),
        json!({"outcome": "cancelled", "exit_code": null, "reason": "cancelled", "outputs": {}, "lines": 0}),
    )
    .await;
    let run: Value = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "cancelled");
    let again = h
        .http
        .post(h.url(&path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_message() {
    let h = harness().await;
    let token = h.register("checker").await;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            h.http.post(h.url(wire::POLL)).json(&json!({"wait_ms": 1})),
            401,
        ),
        (
            h.http
                .post(h.url(wire::REGISTER))
                .bearer_auth("wrong")
                .json(&json!({"name": "x", "ephemeral": true})),
            401,
        ),
        (
            h.http
                .post(h.url(wire::REGISTER))
                .bearer_auth(REGISTRATION)
                .json(&json!({"name": "bad name!", "ephemeral": true})),
            400,
        ),
        (
            h.http
                .post(h.url(wire::POLL))
                .bearer_auth(&token)
                .body("{not json")
                .header("content-type", "application/json"),
            400,
        ),
        (
            h.http
                .post(h.url(wire::POLL))
                .bearer_auth(&token)
                .json(&json!({"wait_ms": 1, "extra": true})),
            422,
        ),
        (
            h.http
                .post(h.url("/internal/attempts/abc/logs"))
                .bearer_auth(&token)
                .json(&json!({"lines": []})),
            400,
        ),
        (
            h.http
                .post(h.url("/internal/attempts/999999/logs"))
                .bearer_auth(&token)
                .json(&json!({"lines": []})),
            404,
        ),
        (h.http.get(h.url("/api/runs/x")), 400),
        (h.http.get(h.url("/api/runs/12345")), 404),
        (h.http.get(h.url("/api/runs/1/steps/a/logs?after=zz")), 404),
    ];
    for (request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{status}: {body}"
        );
    }
    h.engine.shutdown().await;
}
