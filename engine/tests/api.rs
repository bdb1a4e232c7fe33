//! The HTTP surfaces of an in-process engine on `127.0.0.1:0`, driven over real HTTP: a
//! scripted runner speaking the internal protocol, the logs API as JSON lines and as SSE
//! resumed from `Last-Event-ID`, cancellation reaching the runner, and admin-token writes.
//!
//! Why one file past ~600 lines: the public and internal HTTP surfaces against one
//! in-process engine fixture, a test per route family; the scripted runner they share lives
//! here.

use std::time::Duration;

use crate::support;

use evaluator::plan::{Action, Plan, Step};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use plue_server::server::{self, EngineConfig, RunningEngine};
use plue_store::{now_ms, NewRun, NewRunnerToken, RunnerTokenKind, Store};
use plue_types::protocol::{self as wire, LogBatch, LogLine, Stream};
use plue_types::status::{RunState, StepStatus};
use serde_json::{json, Value};

const REGISTRATION: &str = "registration-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

struct Harness {
    engine: RunningEngine,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A harness whose engine holds the secret `DEPLOY_KEY`.
async fn harness_with_deploy_key() -> Harness {
    harness_with(|config| {
        // Named for no repository: the local runs these tests start get it.
        config.secrets =
            std::collections::BTreeMap::from([("DEPLOY_KEY".into(), "s3cr3t-value".into())]).into();
    })
    .await
}

async fn harness_with(configure: impl FnOnce(&mut EngineConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = support::admin_config(REGISTRATION, ADMIN);
    configure(&mut config);
    let engine = server::start(store, listener, config, None).await.unwrap();
    Harness {
        engine,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Harness {
    /// The stored state of the runner registered as `name`.
    async fn runner_state(&self, name: &str) -> String {
        let runners = self
            .engine
            .executor
            .store()
            .list_runners(100)
            .await
            .unwrap();
        runners
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.state.to_string())
            .unwrap_or_else(|| panic!("no runner {name}"))
    }

    /// `GET path` as the admin, read as JSON.
    async fn admin_json(&self, path: impl AsRef<str>) -> Value {
        self.http
            .get(self.url(path.as_ref()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.engine.url)
    }

    async fn start_run(&self, steps: Vec<Step>) -> i64 {
        let plan = Plan::new("api", steps);
        let json = serde_json::to_string(&plan).unwrap();
        self.engine
            .executor
            .start_run(&NewRun {
                workflow_path: "/w/api.plue.py",
                ..plue_store::testing::local_run(&plan, &json)
            })
            .await
            .unwrap()
    }

    /// Registers a runner; returns its session token.
    async fn register(&self, name: &str) -> String {
        support::register_runner(&self.http, &self.engine.url, REGISTRATION, name).await
    }

    /// Registers `name` announcing `labels` with registration token `token`: the answer.
    async fn try_register(&self, token: &str, name: &str, labels: Value) -> reqwest::Response {
        self.post(
            token,
            wire::REGISTER,
            json!({"name": name, "labels": labels, "ephemeral": true}),
        )
        .await
    }

    /// Stores a registration token of `kind` for `name` (the operator's or the pool's way
    /// to make one); returns the token.
    async fn make_token(
        &self,
        kind: RunnerTokenKind,
        name: &str,
        labels: Value,
        secrets: bool,
        expires_at: Option<i64>,
    ) -> String {
        let token = plue_vault::tokens::new_token().unwrap();
        self.engine
            .executor
            .store()
            .create_runner_token(&NewRunnerToken {
                kind,
                name,
                token_hash: &plue_vault::tokens::hash_token(&token),
                labels_json: &labels.to_string(),
                secrets,
                accept_forks: false,
                expires_at,
                now: now_ms(),
            })
            .await
            .unwrap();
        token
    }

    /// The stored log lines of `step` of run `run_id`, as the logs API gives them (JSON lines).
    async fn log_lines(&self, run_id: i64, step: &str) -> Vec<Value> {
        let body = support::send_text(
            self.http
                .get(self.url(&format!("/api/runs/{run_id}/steps/{step}/logs")))
                .bearer_auth(ADMIN),
        )
        .await;
        body.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The texts of [`Harness::log_lines`].
    async fn log_texts(&self, run_id: i64, step: &str) -> Vec<String> {
        self.log_lines(run_id, step)
            .await
            .iter()
            .map(|line| line["text"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The stored row of step `step` of run `run_id`.
    async fn step_row(&self, run_id: i64, step: &str) -> plue_store::StepRunRow {
        let store = self.engine.executor.store();
        store.step_run(run_id, step).await.unwrap().unwrap()
    }

    /// `POST path` with bearer `token` (none: anonymous), no body.
    async fn post_as(&self, token: Option<&str>, path: &str) -> reqwest::Response {
        let url = self.url(path);
        support::request(&self.http, reqwest::Method::POST, &url, token, None)
            .send()
            .await
            .unwrap()
    }

    /// [`Harness::make_token`] of a scoped token for `name` granting `labels` and secrets.
    async fn scoped_token(&self, name: &str, labels: Value) -> String {
        self.make_token(RunnerTokenKind::Scoped, name, labels, true, None)
            .await
    }

    /// Starts a run of `step` and registers a runner `name`, which polls it: the run's id,
    /// the runner's session token and its assignment.
    async fn held(&self, name: &str, step: Step) -> (i64, String, wire::Assignment) {
        let run_id = self.start_run(vec![step]).await;
        let token = self.register(name).await;
        let assignment = self.poll(&token).await;
        (run_id, token, assignment)
    }

    /// A poll that expects nothing within `wait_ms`.
    async fn poll_nothing(&self, token: &str, wait_ms: u64) {
        let response: wire::PollResponse = self
            .post(token, wire::POLL, json!({ "wait_ms": wait_ms }))
            .await
            .json()
            .await
            .unwrap();
        assert!(
            response.assignment.is_none(),
            "{:?}",
            response.assignment.map(|a| a.step_id)
        );
    }

    /// Reports attempt `attempt_id` ended with `body`; the engine's answer.
    async fn complete(&self, token: &str, attempt_id: i64, body: Value) -> wire::CompleteResponse {
        self.post(token, &wire::complete_path(attempt_id), body)
            .await
            .json()
            .await
            .unwrap()
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

/// The completion of an attempt that succeeded (exit code 0, no lines).
fn succeeded() -> Value {
    json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 0})
}

fn bash(id: &str, command: &str) -> Step {
    Step::bash(id, command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_runner_runs_a_step_and_sse_resumes_exactly() {
    let h = harness().await;
    let (run_id, token, assignment) = h.held("scripted", bash("build", "echo hi")).await;
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
        .bearer_auth(ADMIN)
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
    let lines = h.log_lines(run_id, "build").await;
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[149]["text"], "line 150");

    let run: Value = h.admin_json(format!("/api/runs/{run_id}")).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["steps"][0]["outputs"]["k"], "v");
    assert_eq!(run["steps"][0]["attempts"], 1);
    h.engine.shutdown().await;
}

/// A completion carrying its attempt's last lines (a short step's: they did not go as a
/// batch of their own): stored after the ones sent before, once however often the report
/// comes, and before the end is recorded; a report refused (a malformed batch, a reason too long) stores none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_stores_the_last_lines_it_carries_once_before_the_end() {
    let h = harness().await;
    let (run_id, token, assignment) = h.held("short", bash("build", "echo hi")).await;
    let attempt = assignment.attempt_id;
    h.send_lines(&token, attempt, 1..=3).await;
    let tail = |seqs: &[u64]| {
        json!({"lines": seqs.iter().map(|seq| json!({
            "seq": seq, "stream": "stdout", "text": format!("line {seq}"), "ts_ms": 1
        })).collect::<Vec<_>>()})
    };
    let report = |logs: Value| json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 5, "logs": logs});
    let (status, message) = refusal(
        h.post(&token, &wire::complete_path(attempt), report(tail(&[5, 4])))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{message}");
    // Refused for another field: none of its lines is stored either.
    let mut long_reason = report(tail(&[4, 5]));
    long_reason["reason"] = json!("r".repeat(5000));
    let (status, message) = refusal(
        h.post(&token, &wire::complete_path(attempt), long_reason)
            .await,
    )
    .await;
    assert_eq!(status, 400, "{message}");
    let step_run = h.step_row(run_id, "build").await.id;
    let stored = h.engine.executor.store().read_logs(step_run, (0, 0), 100);
    assert_eq!(stored.await.unwrap().len(), 3, "only the batch sent before");
    assert_eq!(
        h.step_row(run_id, "build").await.status,
        StepStatus::Claimed
    );
    for _ in 0..2 {
        let done = h
            .post(&token, &wire::complete_path(attempt), report(tail(&[4, 5])))
            .await;
        assert!(done.status().is_success(), "{:?}", done.text().await);
    }
    let texts = h.log_texts(run_id, "build").await;
    assert_eq!(
        texts,
        (1..=5).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );
    assert_eq!(
        h.step_row(run_id, "build").await.status,
        StepStatus::Succeeded
    );
    h.engine.shutdown().await;
}

/// A log cut at its quota whose attempt was not failed — the engine failed or died between
/// storing the cut and failing the attempt, and the runner sends the batch again — fails
/// the attempt at that batch, with the quota as its reason, and tells the runner to stop;
/// the runner's own completion then records nothing. regression: the batch sent again
/// found the log cut, stored nothing and failed nothing, and the attempt ended with the
/// runner's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_log_whose_failing_was_lost_fails_the_attempt_at_the_next_batch() {
    let h = harness().await;
    let (run_id, token, assignment) = h.held("cut", bash("build", "echo hi")).await;
    let attempt = assignment.attempt_id;
    let row = h.step_row(run_id, "build").await;
    let marker = "log truncated: this step passed its log quota of 67108864 bytes \
                  (plue serve --quota-step-log-bytes)";
    let line = |seq: u64, stream: Stream, text: &str| LogLine {
        seq,
        stream,
        text: text.into(),
        ts_ms: 1,
    };
    // What the logs handler stores of a batch that passes the step's quota, and then
    // nothing more.
    let at = plue_store::LogAttempt {
        attempt_id: attempt,
        run_id,
        step_run_id: row.id,
        number: i64::from(assignment.attempt),
    };
    let store = h.engine.executor.store();
    let cut = [
        line(1, Stream::Stdout, "line 1"),
        line(2, Stream::System, marker),
    ];
    store
        .append_logs_counted(at, &cut, plue_store::BatchEnd::Cut)
        .await
        .unwrap();
    assert_eq!(
        h.step_row(run_id, "build").await.status,
        StepStatus::Claimed
    );

    let batch = LogBatch {
        lines: vec![
            line(1, Stream::Stdout, "line 1"),
            line(2, Stream::Stdout, "line 2"),
        ],
    };
    let answer: wire::LogAck = h
        .post(
            &token,
            &wire::logs_path(attempt),
            serde_json::to_value(batch).unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(answer.cancel, "the runner is told to stop the step");
    let failed = h.step_row(run_id, "build").await;
    assert_eq!(failed.status, StepStatus::Failed);
    assert_eq!(failed.reason.as_deref(), Some(marker));
    let done = h
        .complete(
            &token,
            attempt,
            json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "outputs": {}, "lines": 2}),
        )
        .await;
    assert!(done.next.is_none());
    let after = h.step_row(run_id, "build").await;
    assert_eq!(
        (after.status.as_str(), after.reason.as_deref()),
        ("failed", Some(marker))
    );
    let texts = h.log_texts(run_id, "build").await;
    assert_eq!(texts, ["line 1", marker], "nothing stored past the cut");
    h.engine.shutdown().await;
}

/// A step row of `GET /api/runs/{id}` says when its current attempt became ready, started
/// and ended, so ready → started (the wait for a runner) can be read from outside; its
/// `started_at` stays the first attempt's. regression: the rows carried no ready time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_rows_carry_ready_started_and_finished_of_the_current_attempt() {
    let h = harness().await;
    let mut flaky = bash("flaky", "true");
    flaky.retries = 1;
    flaky.backoff = 0;
    let run_id = h.start_run(vec![flaky]).await;
    let token = h.register("scripted").await;
    for outcome in ["failed", "succeeded"] {
        let assignment = h.poll(&token).await;
        h.post(
            &token,
            &wire::started_path(assignment.attempt_id),
            json!({}),
        )
        .await;
        h.complete(
            &token,
            assignment.attempt_id,
            json!({"outcome": outcome, "exit_code": 0, "reason": null, "outputs": {}, "lines": 0}),
        )
        .await;
    }
    let run: Value = h.admin_json(format!("/api/runs/{run_id}")).await;
    let step = &run["steps"][0];
    assert_eq!(step["attempts"], 2, "{run}");
    let at = |key: &str| {
        step[key]
            .as_i64()
            .unwrap_or_else(|| panic!("no {key} in {step}"))
    };
    // The retry became ready after the first attempt started, and started once ready.
    assert!(at("started_at") <= at("ready_at"), "{step}");
    assert!(at("ready_at") <= at("attempt_started_at"), "{step}");
    assert!(
        at("attempt_started_at") <= at("attempt_finished_at"),
        "{step}"
    );
    assert_eq!(at("attempt_finished_at"), at("finished_at"), "{step}");
    h.engine.shutdown().await;
}

/// A completion that asks for more work answers with the runner's next attempt, claimed
/// for it (a poll saved); a repeated completion claims nothing, and one that does not ask
/// leaves the step to the pollers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_hands_over_the_next_attempt_once() {
    let h = harness().await;
    let mut second = bash("second", "true");
    second.depends_on = vec!["first".into()];
    let mut third = bash("third", "true");
    third.depends_on = vec!["second".into()];
    h.start_run(vec![bash("first", "true"), second, third])
        .await;
    let token = h.register("chain").await;
    let first = h.poll(&token).await;
    assert_eq!(first.step_id, "first");
    let done = json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 0, "claim_next": true});
    let answer = h.complete(&token, first.attempt_id, done.clone()).await;
    let second = answer.next.expect("the next attempt with the answer");
    assert_eq!(second.step_id, "second");
    // Busy throughout: never idle (so never retired by a pool) while holding a claim.
    assert_eq!(h.runner_state("chain").await, "busy");
    // The same report again (a lost answer): nothing more is claimed.
    let again = h.complete(&token, first.attempt_id, done.clone()).await;
    assert_eq!(again.next, None);
    // Without asking, the third step is left for a poll.
    let quiet = succeeded();
    let answer = h.complete(&token, second.attempt_id, quiet).await;
    assert_eq!(answer.next, None);
    assert_eq!(h.runner_state("chain").await, "idle");
    let third = h.poll(&token).await;
    assert_eq!(third.step_id, "third");
    assert_eq!(h.runner_state("chain").await, "busy");
    // Asking for the next attempt when there is none leaves the runner idle.
    let answer = h.complete(&token, third.attempt_id, done).await;
    assert_eq!(answer.next, None);
    assert_eq!(h.runner_state("chain").await, "idle");
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_through_the_api_reaches_the_runner() {
    let h = harness().await;
    let (run_id, token, assignment) = h.held("cancellable", bash("long", "sleep 100")).await;
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
    let unauthorized = h.post_as(None, &path).await;
    assert_eq!(unauthorized.status(), 401);
    let wrong = h.post_as(Some("nope"), &path).await;
    assert_eq!(wrong.status(), 401);
    let cancelled = h.post_as(Some(ADMIN), &path).await;
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
    let run: Value = h.admin_json(format!("/api/runs/{run_id}")).await;
    assert_eq!(run["status"], "cancelled");
    let again = h.post_as(Some(ADMIN), &path).await;
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
        (h.http.get(h.url("/api/runs/x")).bearer_auth(ADMIN), 400),
        (h.http.get(h.url("/api/runs/12345")).bearer_auth(ADMIN), 404),
        (
            h.http
                .get(h.url("/api/runs/1/steps/a/logs?after=zz"))
                .bearer_auth(ADMIN),
            404,
        ),
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

/// `response`'s status and error message.
async fn refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

fn labelled(id: &str, key: &str, value: &str) -> Step {
    let mut step = bash(id, "true");
    step.runner.insert(key.into(), value.into());
    step
}

// The attacker holds a valid token scoped to zone=dev (or the shared one) and announces
// zone=prod to get the production step and its secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cannot_claim_labels_its_token_does_not_grant() {
    let h = harness().await;
    h.start_run(vec![labelled("deploy", "zone", "prod")]).await;
    let dev = h.scoped_token("dev runners", json!({"zone": "dev"})).await;
    for (token, what) in [
        (dev.as_str(), "scoped to zone=dev"),
        (REGISTRATION, "shared"),
    ] {
        let (status, message) = refusal(
            h.try_register(token, "hopper", json!({"zone": "prod"}))
                .await,
        )
        .await;
        assert_eq!(status, 403, "{what}: {message}");
        assert!(message.contains("zone=prod"), "{what}: {message}");
    }
    // Registered inside its scope, it is never handed the production step.
    let response = h.try_register(&dev, "dev-1", json!({"zone": "dev"})).await;
    assert_eq!(response.status(), 200);
    let session: wire::RegisterResponse = response.json().await.unwrap();
    h.poll_nothing(&session.session_token, 300).await;
    // The runner the operator made a prod token for takes it.
    let prod = h
        .scoped_token("prod runners", json!({"zone": "prod"}))
        .await;
    let response = h
        .try_register(&prod, "prod-1", json!({"zone": "prod"}))
        .await;
    let session: wire::RegisterResponse = response.json().await.unwrap();
    assert_eq!(h.poll(&session.session_token).await.step_id, "deploy");
    h.engine.shutdown().await;
}

// A step only one of two waiting runners may take: the queueing wakes one poll (the one
// waiting longest, which may not take it), and that poll wakes the other, whose wait would
// otherwise last 25 s. No timer finds it first: here due work is looked for, polls look
// again unwoken, and the sweeper wakes every poll, each once a minute or less often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_only_one_waiting_runner_may_take_reaches_it_when_another_is_woken() {
    let h = harness_with(|config| {
        config.due_check = Duration::from_secs(60);
        config.poll_recheck = Duration::from_secs(60);
        config.heartbeat_interval = Duration::from_secs(60);
        config.lost_after = Duration::from_secs(600);
    })
    .await;
    let plain = h.register("plain").await;
    let gpu_token = h.scoped_token("gpu runners", json!({"gpu": "yes"})).await;
    let response = h
        .try_register(&gpu_token, "gpu-1", json!({"gpu": "yes"}))
        .await;
    let gpu: wire::RegisterResponse = response.json().await.unwrap();
    let polled = |token: String, wait_ms: u64| {
        let http = h.http.clone();
        let url = h.url(wire::POLL);
        tokio::spawn(async move {
            let request = http.post(url).bearer_auth(token);
            let response = request.json(&json!({ "wait_ms": wait_ms })).send().await;
            let polled: wire::PollResponse = response.unwrap().json().await.unwrap();
            polled.assignment.map(|a| a.step_id)
        })
    };
    // The plain runner waits first, so the queueing's one wake goes to it.
    let plain_poll = polled(plain, 3_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gpu_poll = polled(gpu.session_token, 25_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start_run(vec![labelled("train", "gpu", "yes")]).await;
    let taken = tokio::time::timeout(Duration::from_secs(10), gpu_poll).await;
    let taken = taken.expect("the gpu runner's poll was not woken").unwrap();
    assert_eq!(taken.as_deref(), Some("train"));
    assert_eq!(plain_poll.await.unwrap(), None);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_token_forbids_secrets_never_gets_a_step_that_needs_them() {
    let h = harness_with_deploy_key().await;
    let mut deploy = bash("deploy", "true");
    deploy.secrets.push("DEPLOY_KEY".into());
    h.start_run(vec![deploy, bash("lint", "true")]).await;
    let untrusted = h
        .make_token(RunnerTokenKind::Scoped, "untrusted", json!({}), false, None)
        .await;
    let response = h.try_register(&untrusted, "untrusted-1", json!({})).await;
    let session: wire::RegisterResponse = response.json().await.unwrap();
    let assignment = h.poll(&session.session_token).await;
    assert_eq!(assignment.step_id, "lint");
    assert!(assignment.secrets.is_empty());
    h.poll_nothing(&session.session_token, 300).await;
    // A runner allowed secrets gets the step with its secret.
    let trusted = h.register("trusted-1").await;
    let assignment = h.poll(&trusted).await;
    assert_eq!(assignment.step_id, "deploy");
    assert_eq!(assignment.secrets["DEPLOY_KEY"], "s3cr3t-value");
    h.engine.shutdown().await;
}

// A one-time token minted for a pool runner, stolen: it registers one runner, under the
// name it was minted for, before it expires — nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_one_time_token_registers_nothing_more() {
    let h = harness().await;
    let soon = Some(now_ms() + 60_000);
    let once = h
        .make_token(RunnerTokenKind::Once, "pool-test-1", json!({}), true, soon)
        .await;
    let (status, message) = refusal(h.try_register(&once, "thief", json!({})).await).await;
    assert_eq!(status, 403, "{message}");
    let response = h.try_register(&once, "pool-test-1", json!({})).await;
    assert_eq!(response.status(), 200);
    let session: wire::RegisterResponse = response.json().await.unwrap();
    for name in ["pool-test-1", "thief", "pool-test-2"] {
        let (status, message) = refusal(h.try_register(&once, name, json!({})).await).await;
        assert_eq!(status, 401, "a second use as {name}: {message}");
    }
    // The session token stays bound to the runner that registered.
    let heartbeat = h
        .post(&session.session_token, wire::HEARTBEAT, json!({}))
        .await;
    assert_eq!(heartbeat.status(), 200);
    // An expired one registers nothing either.
    let expired = h
        .make_token(
            RunnerTokenKind::Once,
            "pool-test-3",
            json!({}),
            true,
            Some(now_ms() - 1),
        )
        .await;
    let (status, _) = refusal(h.try_register(&expired, "pool-test-3", json!({})).await).await;
    assert_eq!(status, 401);
    h.engine.shutdown().await;
}

// A racing pair of registrations with one stolen one-time token: at most one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_tokens_survive_a_registration_race() {
    let h = harness().await;
    let once = h
        .make_token(
            RunnerTokenKind::Once,
            "pool-race-1",
            json!({}),
            true,
            Some(now_ms() + 60_000),
        )
        .await;
    let answers =
        futures::future::join_all((0..6).map(|_| h.try_register(&once, "pool-race-1", json!({}))))
            .await;
    let ok = answers.iter().filter(|a| a.status() == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        answers.iter().map(|a| a.status()).collect::<Vec<_>>()
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_runner_names_are_unique_and_pool_names_are_reserved() {
    let h = harness().await;
    let first = h.register("twin").await;
    let (status, message) = refusal(h.try_register(REGISTRATION, "twin", json!({})).await).await;
    assert_eq!(status, 409, "{message}");
    let (status, message) = refusal(
        h.try_register(REGISTRATION, "pool-abcdef-1", json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("reserved"), "{message}");
    // Once the first one left, the name is free again.
    let left = h.post(&first, wire::DEREGISTER, json!({})).await;
    assert_eq!(left.status(), 200);
    let again = h.try_register(REGISTRATION, "twin", json!({})).await;
    assert_eq!(again.status(), 200);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cannot_report_an_attempt_it_does_not_hold() {
    let h = harness().await;
    let run_id = h.start_run(vec![bash("build", "true")]).await;
    let holder = h.register("holder").await;
    let forger = h.register("forger").await;
    let attempt = h.poll(&holder).await.attempt_id;
    let forged = json!({
        "outcome": "succeeded", "exit_code": 0, "reason": null,
        "outputs": {"version": "evil"}, "lines": 0
    });
    for path in [wire::complete_path(attempt), wire::logs_path(attempt)] {
        let body = if path.ends_with("logs") {
            json!({"lines": []})
        } else {
            forged.clone()
        };
        let (status, message) = refusal(h.post(&forger, &path, body).await).await;
        assert_eq!(status, 403, "{path}: {message}");
    }
    let step = h.step_row(run_id, "build").await;
    assert_eq!(step.status, StepStatus::Claimed);
    assert_eq!(step.outputs, "{}");
    h.engine.shutdown().await;
}

// A user's API token (not an admin's) tries to make itself a runner token for prod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_tokens_are_made_listed_and_revoked_by_the_admin_only() {
    let h = harness().await;
    let api = |method: reqwest::Method, path: &str, token: &str| {
        h.http
            .request(method, h.url(path))
            .bearer_auth(token.to_string())
    };
    let store = h.engine.executor.store();
    let (_, _, api_token) = support::user_with_token(store, "ci", &[]).await;
    let body = json!({"name": "prod", "labels": {"zone": "prod"}, "secrets": true});
    for (token, expected) in [(api_token.as_str(), 403), ("nope", 401)] {
        let response = api(reqwest::Method::POST, "/api/runner-tokens", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{token}");
    }
    let listed = api(reqwest::Method::GET, "/api/runner-tokens", &api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403, "listing needs an admin too");
    let bad = api(reqwest::Method::POST, "/api/runner-tokens", ADMIN)
        .json(&json!({"name": "x", "labels": {"k": "a=b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let created = api(reqwest::Method::POST, "/api/runner-tokens", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let (id, token) = (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap(),
    );
    let listed: Value =
        support::send_json(api(reqwest::Method::GET, "/api/runner-tokens", ADMIN)).await;
    assert_eq!(listed[0]["labels"], json!({"zone": "prod"}), "{listed}");
    assert!(
        !listed.to_string().contains(token),
        "a listing never shows the token"
    );

    // A runner of that token holds a step; revoking the token stops it and fails the step.
    let run_id = h.start_run(vec![labelled("deploy", "zone", "prod")]).await;
    let response = h
        .try_register(token, "prod-1", json!({"zone": "prod"}))
        .await;
    let session: wire::RegisterResponse = response.json().await.unwrap();
    h.poll(&session.session_token).await;
    let revoked: Value = support::send_json(api(
        reqwest::Method::DELETE,
        &format!("/api/runner-tokens/{id}"),
        ADMIN,
    ))
    .await;
    assert_eq!(revoked["runners_stopped"], 1, "{revoked}");
    let heartbeat = h
        .post(&session.session_token, wire::HEARTBEAT, json!({}))
        .await;
    assert_eq!(heartbeat.status(), 410);
    let step = h.step_row(run_id, "deploy").await;
    assert_eq!(step.status, StepStatus::Failed);
    assert!(step.reason.unwrap_or_default().contains("revoked"));
    let (status, _) = refusal(
        h.try_register(token, "prod-2", json!({"zone": "prod"}))
            .await,
    )
    .await;
    assert_eq!(status, 401);
    let missing = api(reqwest::Method::DELETE, "/api/runner-tokens/999", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    h.engine.shutdown().await;
}

/// A tar holding `entries` (path, content), paths written byte for byte.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in entries {
        testkit::hostile_tar::raw_entry(&mut out, path, tar::EntryType::Regular, "", data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_uploads_for_its_attempt_and_reads_only_the_blobs_it_names() {
    let h = harness().await;
    let mut build = bash("build", "true");
    build.artifacts = vec!["out.txt".into()];
    let mut check = bash("check", "true").after(&["build"]);
    check.needs_artifacts = vec!["build".into()];
    let run_id = h.start_run(vec![build, check]).await;
    let holder = h.register("holder").await;
    let other = h.register("other").await;
    let first = h.poll(&holder).await;
    assert_eq!(first.step_id, "build");
    assert_eq!(first.handoff.artifacts, ["out.txt"]);
    assert!(first.handoff.max_bytes > 0 && !first.handoff.keep_workspace);
    let put = |token: &str, attempt: i64, body: Vec<u8>| {
        h.http
            .put(h.url(&wire::blob_path(attempt, wire::BlobKind::Artifacts)))
            .bearer_auth(token.to_string())
            .body(body)
            .send()
    };

    // Another runner may not upload for this attempt; a hostile tar is refused whole.
    let refused = put(&other, first.attempt_id, tar_of(&[("out.txt", b"x")]))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let hostile = put(&holder, first.attempt_id, tar_of(&[("../escape", b"x")]))
        .await
        .unwrap();
    assert_eq!(hostile.status(), 400);
    assert!(hostile.text().await.unwrap().contains("without '..'"));
    let listed: Value = h.admin_json(format!("/api/runs/{run_id}/artifacts")).await;
    assert_eq!(listed, json!([]), "a refused upload is not recorded");

    let stored = put(
        &holder,
        first.attempt_id,
        tar_of(&[("out.txt", b"built\n")]),
    )
    .await
    .unwrap();
    assert!(stored.status().is_success(), "{:?}", stored.text().await);
    // An llm attempt's transcript: kept for the run's readers, never handed to a step.
    let transcript = br#"{"version": 1, "turns": []}"#;
    let kept = h
        .http
        .put(h.url(&wire::blob_path(
            first.attempt_id,
            wire::BlobKind::Transcript,
        )))
        .bearer_auth(holder.to_string())
        .body(tar_of(&[("transcript.json", transcript)]))
        .send()
        .await
        .unwrap();
    assert!(kept.status().is_success(), "{:?}", kept.text().await);
    let done = h
        .post(&holder, &wire::complete_path(first.attempt_id), succeeded())
        .await;
    assert!(done.status().is_success());
    // Once the attempt ended, its files can no longer be replaced.
    let late = put(
        &holder,
        first.attempt_id,
        tar_of(&[("out.txt", b"swapped\n")]),
    )
    .await
    .unwrap();
    assert_eq!(late.status(), 409);

    let second = h.poll(&other).await;
    assert_eq!(second.step_id, "check");
    assert_eq!(second.handoff.needs_artifacts, ["build"]);
    let get = |token: &str, kind: wire::BlobKind, step: &str| {
        h.http
            .get(h.url(&wire::dependency_blob_path(second.attempt_id, kind, step)))
            .bearer_auth(token.to_string())
            .send()
    };
    let tar = get(&other, wire::BlobKind::Artifacts, "build")
        .await
        .unwrap();
    assert!(tar.status().is_success());
    let bytes = tar.bytes().await.unwrap();
    let files = runner::handoff::list(&bytes[..], &plue_types::handoff::Limits::default()).unwrap();
    assert_eq!(files[0].path, "out.txt");
    // Not named by the attempt's dispatch, or not the attempt's holder: refused.
    for (token, kind, step, status) in [
        (&other, wire::BlobKind::Workspace, "build", 403),
        (&other, wire::BlobKind::Artifacts, "check", 403),
        (&holder, wire::BlobKind::Artifacts, "build", 403),
        (&other, wire::BlobKind::Transcript, "build", 403),
    ] {
        let response = get(token, kind, step).await.unwrap();
        assert_eq!(response.status(), status, "{kind:?} {step}");
    }

    let file = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}/steps/build/artifacts/out.txt")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(file.text().await.unwrap(), "built\n");
    let transcript: Value = h
        .admin_json(format!("/api/runs/{run_id}/steps/build/transcript"))
        .await;
    assert_eq!(transcript["turns"], json!([]));
}

/// The run view names each review loop and where it stands, and each step's iteration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_view_shows_review_loops_and_iterations() {
    let h = harness().await;
    let mut review = bash("review", "false");
    review.depends_on = vec!["build".into()];
    review.loop_to = Some("build".into());
    review.max_loops = Some(2);
    let mut deploy = bash("deploy", "true");
    deploy.depends_on = vec!["review".into()];
    let run_id = h
        .start_run(vec![bash("build", "true"), review, deploy])
        .await;
    let run: Value = h.admin_json(format!("/api/runs/{run_id}")).await;
    assert_eq!(run["loops"][0]["label"], "iteration 1 of review", "{run}");
    assert_eq!(run["loops"][0]["target"], "build");
    assert_eq!(run["loops"][0]["max_loops"], 2);
    assert_eq!(run["loops"][0]["loops_taken"], 0);
    assert_eq!(run["loops"][0]["steps"], json!(["build", "review"]));
    assert_eq!(run["steps"][0]["iteration"], 1);
    assert_eq!(run["steps"][0]["in_loop_of"], "review");
    assert!(run["steps"][2].get("in_loop_of").is_none(), "{run}");
    let plain = h.start_run(vec![bash("a", "true")]).await;
    let run: Value = h.admin_json(format!("/api/runs/{plain}")).await;
    assert!(run.get("loops").is_none(), "{run}");
    assert_eq!(run["steps"][0]["iteration"], 1);
    h.engine.shutdown().await;
}

fn approval(id: &str, timeout: u64) -> Step {
    let mut step = Step::new(
        id,
        Action::Approval(evaluator::plan::ApprovalAction {
            message: None,
            approvers: vec![],
            exclude_triggerer: false,
        }),
    );
    step.timeout = timeout;
    step
}

// regression: an approval decided after its deadline won when the sweeper had not run yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_after_the_deadline_is_409_and_the_approval_times_out() {
    // The sweeper looks every 300 s: only the decision itself can see the deadline.
    let h = harness_with(|config| config.heartbeat_interval = Duration::from_secs(600)).await;
    let run_id = h
        .start_run(vec![
            approval("ship", 1),
            bash("deploy", "true").after(&["ship"]),
        ])
        .await;
    let store = h.engine.executor.store();
    assert_eq!(
        store
            .step_run(run_id, "ship")
            .await
            .unwrap()
            .unwrap()
            .status,
        StepStatus::Waiting
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = h
        .post(
            ADMIN,
            &format!("/api/runs/{run_id}/steps/ship/approve"),
            json!({"comment": "too late"}),
        )
        .await;
    let (status, message) = refusal(late).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("timed out"), "{message}");
    let ship = store.step_run(run_id, "ship").await.unwrap().unwrap();
    assert_eq!(ship.status, StepStatus::Failed);
    assert_eq!(
        ship.reason.as_deref(),
        Some("no decision before the approval timed out")
    );
    assert!(store.approvals_of_run(run_id).await.unwrap().is_empty());
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().status,
        RunState::Failed
    );
    h.engine.shutdown().await;
}

// Comments and token names are shown beside other text: control and bidi characters in
// them are refused, naming the field, the position and the code point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_and_token_names_refuse_control_and_bidi_characters() {
    let h = harness().await;
    let run_id = h.start_run(vec![approval("ship", 3600)]).await;
    let path = format!("/api/runs/{run_id}/steps/ship/approve");
    for (comment, code) in [
        ("lgtm \u{202e}dlrow", "U+202E"),
        ("ok\u{2066}", "U+2066"),
        ("ok\u{200f}", "U+200F"),
        ("\u{61c}", "U+061C"),
        ("ok\x1b[2J", "U+001B"),
        ("two\nlines", "U+000A"),
        ("nul\0", "U+0000"),
        // Issue 30: invisible and line-breaking characters.
        ("two\u{2028}lines", "U+2028"),
        ("two\u{2029}lines", "U+2029"),
        ("tag\u{e0041}", "U+E0041"),
        ("zero\u{200b}width", "U+200B"),
        ("word\u{2060}joiner", "U+2060"),
        ("\u{feff}bom", "U+FEFF"),
        ("soft\u{ad}hyphen", "U+00AD"),
    ] {
        let (status, message) =
            refusal(h.post(ADMIN, &path, json!({ "comment": comment })).await).await;
        assert_eq!(status, 400, "{comment:?}: {message}");
        assert!(
            message.starts_with("comment ") && message.contains(code),
            "{comment:?}: {message}"
        );
    }
    assert!(h
        .engine
        .executor
        .store()
        .approvals_of_run(run_id)
        .await
        .unwrap()
        .is_empty());
    let fine = h
        .post(ADMIN, &path, json!({"comment": "lgtm 🚀 déployez"}))
        .await;
    assert_eq!(fine.status(), 200);

    for endpoint in ["/api/tokens", "/api/runner-tokens"] {
        for (name, code) in [
            ("ci\u{202e}nimda", "U+202E"),
            ("ci\u{200e}", "U+200E"),
            ("ci\u{2069}", "U+2069"),
            ("ci\u{7f}", "U+007F"),
            ("c\u{2029}i", "U+2029"),
            ("c\u{2028}i", "U+2028"),
            ("ci\u{e0001}", "U+E0001"),
            ("c\u{200b}i", "U+200B"),
            ("ci\u{feff}", "U+FEFF"),
            ("ci\u{ad}", "U+00AD"),
        ] {
            let (status, message) =
                refusal(h.post(ADMIN, endpoint, json!({ "name": name })).await).await;
            assert_eq!(status, 400, "{endpoint} {name:?}: {message}");
            assert!(
                message.starts_with("name ") && message.contains(code),
                "{endpoint} {name:?}: {message}"
            );
        }
        let made = h
            .post(ADMIN, endpoint, json!({"name": "déploiement"}))
            .await;
        assert_eq!(made.status(), 201, "{endpoint}");
    }

    // Runner labels, where a runner token grants them and where a runner announces them.
    let registration = h
        .make_token(RunnerTokenKind::Scoped, "labels", json!({}), false, None)
        .await;
    for value in ["\u{202e}gpu", "a\u{2029}b", "x\u{200b}", "x\u{e0041}"] {
        let labels = json!({ "zone": value });
        let (status, message) = refusal(
            h.post(
                ADMIN,
                "/api/runner-tokens",
                json!({"name": "labelled", "labels": labels}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{value:?}: {message}");
        assert!(!message.contains(value), "escaped: {message:?}");
        let (status, message) =
            refusal(h.try_register(&registration, "r", labels.clone()).await).await;
        assert_eq!(status, 400, "{value:?}: {message}");
        assert!(!message.contains(value), "escaped: {message:?}");
    }
    h.engine.shutdown().await;
}

// The attack: a runner whose token forbids secrets waits for the step that takes the
// workspace (or artifacts) of a secret-holding step, to read what it left in its files.
// It never claims such a step, and even holding one (a run stored before this rule) it
// cannot fetch the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_secrets_runner_never_claims_or_fetches_what_a_secret_holding_step_left() {
    let h = harness_with_deploy_key().await;
    let mut deploy = bash("deploy", "echo $DEPLOY_KEY > key");
    deploy.secrets.push("DEPLOY_KEY".into());
    deploy.artifacts = vec!["key".into()];
    let mut package = bash("package", "true").after(&["deploy"]);
    package.workspace_from = Some("deploy".into());
    let mut report = bash("report", "true").after(&["package"]);
    report.needs_artifacts = vec!["package".into()];
    let run_id = h.start_run(vec![deploy, package, report]).await;
    let untrusted = h
        .make_token(RunnerTokenKind::Scoped, "untrusted", json!({}), false, None)
        .await;
    let response = h.try_register(&untrusted, "untrusted-1", json!({})).await;
    let mallory: wire::RegisterResponse = response.json().await.unwrap();
    let mallory = mallory.session_token;
    let trusted = h.register("trusted-1").await;

    let first = h.poll(&trusted).await;
    assert_eq!(first.step_id, "deploy");
    let stored = h
        .http
        .put(h.url(&wire::blob_path(
            first.attempt_id,
            wire::BlobKind::Workspace,
        )))
        .bearer_auth(&trusted)
        .body(tar_of(&[("key", b"s3cr3t-value\n")]))
        .send()
        .await
        .unwrap();
    assert!(stored.status().is_success(), "{:?}", stored.text().await);
    let ended = h.complete(&trusted, first.attempt_id, succeeded()).await;
    assert!(ended.next.is_none());
    // `package` is ready; the runner without secrets is never handed it.
    h.poll_nothing(&mallory, 500).await;

    // A run stored before the rule: `package` marked as needing no secret runner.
    let store = h.engine.executor.store();
    assert!(store.step_needs_secrets(run_id, "package").await.unwrap());
    assert!(store.step_needs_secrets(run_id, "report").await.unwrap());
    let db = support::engine_sqlite(&h._dir.path().join("plue.db"));
    db.execute(
        "UPDATE step_runs SET needs_secrets = FALSE WHERE run_id = ?1 AND step_id = ?2",
        rusqlite::params![run_id, "package"],
    )
    .unwrap();
    drop(db);
    let held = h.poll(&mallory).await;
    assert_eq!(held.step_id, "package");
    assert_eq!(held.handoff.workspace_from.as_deref(), Some("deploy"));
    let fetched = h
        .http
        .get(h.url(&wire::dependency_blob_path(
            held.attempt_id,
            wire::BlobKind::Workspace,
            "deploy",
        )))
        .bearer_auth(&mallory)
        .send()
        .await
        .unwrap();
    let (status, message) = refusal(fetched).await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("held secrets"), "{message}");
    h.engine.shutdown().await;
}
