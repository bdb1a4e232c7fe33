//! `--private-reads` against an in-process engine on `127.0.0.1:0`: an anonymous client
//! asks every read route — runs (with their workflow paths on the server), logs, runners
//! (their names), the pool, repositories, secrets, schedules, tokens — and gets 401
//! with nothing in the body; a token holder reads them. With reads open, the same routes
//! answer anonymously (what is public by default).

#[allow(dead_code)] // each test binary uses part of the support module
mod support;

use engine::server::{EngineConfig, RunningEngine};
use runner::protocol as wire;
use serde_json::{json, Value};

const REGISTRATION: &str = "registration-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";
const SERVER_PATH: &str = "/srv/plue/secret-project/deploy.plue.py";

struct Engine {
    engine: RunningEngine,
    http: reqwest::Client,
    run_id: i64,
    _dir: tempfile::TempDir,
}

async fn engine(private_reads: bool) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(REGISTRATION.into());
    config.admin_token = Some(ADMIN.into());
    config.private_reads = private_reads;
    let engine = support::start_in_process(dir.path(), config).await;
    let plan = support::plan("deploy", vec![support::bash_step("build", "true")]);
    let run_id = support::start_plan_run(&engine.executor, SERVER_PATH, &plan, None).await;
    let http = reqwest::Client::new();
    // A runner with a telling name.
    let registered = http
        .post(format!("{}{}", engine.url, wire::REGISTER))
        .bearer_auth(REGISTRATION)
        .json(&json!({"name": "prod-deployer-7", "labels": {}, "ephemeral": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    Engine {
        engine,
        http,
        run_id,
        _dir: dir,
    }
}

impl Engine {
    fn read_routes(&self) -> Vec<String> {
        let run = self.run_id;
        [
            "/api/runs".to_owned(),
            format!("/api/runs/{run}"),
            format!("/api/runs/{run}/steps/build/logs"),
            "/api/runners".to_owned(),
            "/api/pool".to_owned(),
            "/api/repos".to_owned(),
            "/api/repos/acme/app".to_owned(),
            "/api/repos/acme/app/secrets".to_owned(),
            "/api/repos/acme/app/schedules".to_owned(),
            "/api/schedules".to_owned(),
            "/api/runner-tokens".to_owned(),
        ]
        .into_iter()
        .map(|path| format!("{}{path}", self.engine.url))
        .collect()
    }

    async fn get(&self, url: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn api_token(&self) -> String {
        let created: Value = self
            .http
            .post(format!("{}/api/tokens", self.engine.url))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "reader"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reader_finds_no_runner_or_server_path_under_private_reads() {
    let e = engine(true).await;
    for url in e.read_routes() {
        for token in [None, Some("not-a-token")] {
            let (status, body) = e.get(&url, token).await;
            assert_eq!(status, 401, "{url} with {token:?}: {body}");
            for secret in ["prod-deployer-7", "secret-project", "/srv/"] {
                assert!(!body.contains(secret), "{url}: {body}");
            }
        }
    }
    // SSE followers too.
    let response = e
        .http
        .get(format!(
            "{}/api/runs/{}/steps/build/logs",
            e.engine.url, e.run_id
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A token holder reads them.
    let token = e.api_token().await;
    let (status, runners) = e
        .get(&format!("{}/api/runners", e.engine.url), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert!(runners.contains("prod-deployer-7"), "{runners}");
    let (status, run) = e
        .get(
            &format!("{}/api/runs/{}", e.engine.url, e.run_id),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert!(run.contains(SERVER_PATH), "{run}");
    e.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_show_runs_runners_and_local_paths_to_anyone() {
    // What "public by default" means, pinned: the README says so.
    let e = engine(false).await;
    let (status, runners) = e.get(&format!("{}/api/runners", e.engine.url), None).await;
    assert_eq!(status, 200);
    assert!(runners.contains("prod-deployer-7"), "{runners}");
    let (status, run) = e
        .get(&format!("{}/api/runs/{}", e.engine.url, e.run_id), None)
        .await;
    assert_eq!(status, 200);
    assert!(run.contains(SERVER_PATH), "{run}");
    // Writes and the registration tokens' list still need a token.
    let (status, _) = e
        .get(&format!("{}/api/runner-tokens", e.engine.url), None)
        .await;
    assert_ne!(status, 200);
    e.engine.shutdown().await;
}
