//! Private reads, the default (issue 29), against an in-process engine on `127.0.0.1:0`:
//! with or without `--private-reads`, an anonymous client asks every read route — runs
//! (with their workflow paths on the server), logs, runners (their names), the pool,
//! repositories, secrets, schedules, tokens — and gets 401, or an empty list, with nothing
//! in the body; a signed-in user reads the installation-wide lists, the admin the local
//! runs. Public reading is a maintainer's choice per repository, and opens that
//! repository's runs to anyone — nothing else.

use plue_server::server::RunningEngine;
use plue_types::protocol as wire;
use serde_json::json;

use crate::support;

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
    let mut config = support::admin_config(REGISTRATION, ADMIN);
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

    /// A user holding `role` on `acme/app`, and its token.
    async fn member(&self, name: &str, role: &str) -> String {
        let store = self.engine.executor.store();
        let repo = match store.repo_by_name("acme/app").await.unwrap() {
            Some(repo) => repo.id,
            None => support::create_repo(store).await,
        };
        support::user_with_token(store, name, &[(repo, role)])
            .await
            .2
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reader_finds_no_runner_or_server_path_whatever_the_flag() {
    for private_reads in [true, false] {
        let e = engine(private_reads).await;
        for url in e.read_routes() {
            for token in [None, Some("not-a-token")] {
                let (status, body) = e.get(&url, token).await;
                if url.ends_with("/api/runs") && token.is_none() {
                    // The lists answer with what anyone may read: nothing here.
                    let empty = r#"{"runs":[],"next_cursor":null}"#;
                    assert_eq!((status, body.as_str()), (200, empty), "{url}");
                } else if url.ends_with("/api/repos") && token.is_none() {
                    assert_eq!((status, body.as_str()), (200, "[]"), "{url}");
                } else {
                    assert_eq!(status, 401, "{url} with {token:?}: {body}");
                }
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
        // A signed-in user reads the runners; a local run (a server path) only the admin.
        let token = e.member("reader", "reader").await;
        let (status, runners) = e
            .get(&format!("{}/api/runners", e.engine.url), Some(&token))
            .await;
        assert_eq!(status, 200);
        assert!(runners.contains("prod-deployer-7"), "{runners}");
        let run_url = format!("{}/api/runs/{}", e.engine.url, e.run_id);
        let (status, run) = e.get(&run_url, Some(&token)).await;
        assert_eq!(status, 404, "{run}");
        assert!(!run.contains(SERVER_PATH), "{run}");
        let (status, run) = e.get(&run_url, Some(ADMIN)).await;
        assert_eq!(status, 200);
        assert!(run.contains(SERVER_PATH), "{run}");
        e.engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_reads_are_a_maintainers_choice_and_open_only_that_repositorys_runs() {
    let e = engine(false).await;
    let maintainer = e.member("keeper", "maintainer").await;
    let store = e.engine.executor.store();
    let repo = store.repo_by_name("acme/app").await.unwrap().unwrap();
    let plan = support::plan("ci", vec![support::bash_step("build", "true")]);
    let repo_run = support::start_repo_run(&e.engine.executor, "acme/app", repo.id, &plan).await;
    let repo_run_url = format!("{}/api/runs/{repo_run}", e.engine.url);
    assert_eq!(
        e.get(&repo_run_url, None).await.0,
        401,
        "new repositories are private"
    );
    // A reader may not open it; its maintainer does.
    let reader = e.member("peeker", "reader").await;
    let settings = format!("{}/api/repos/acme/app", e.engine.url);
    for (token, expected) in [(&reader, 403), (&maintainer, 200)] {
        let response = e
            .http
            .patch(&settings)
            .bearer_auth(token)
            .json(&json!({"public_read": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected);
    }
    let (status, run) = e.get(&repo_run_url, None).await;
    assert_eq!(status, 200, "{run}");
    let (status, repos) = e.get(&format!("{}/api/repos", e.engine.url), None).await;
    assert_eq!(status, 200);
    assert!(repos.contains("\"public_read\":true"), "{repos}");
    // Nothing else opens: local runs, runners, the pool, secrets, runner tokens, writes.
    for url in [
        format!("{}/api/runs/{}", e.engine.url, e.run_id),
        format!("{}/api/runners", e.engine.url),
        format!("{}/api/schedules", e.engine.url),
        format!("{}/api/repos/acme/app/secrets", e.engine.url),
        format!("{}/api/runner-tokens", e.engine.url),
    ] {
        let (status, body) = e.get(&url, None).await;
        assert_eq!(status, 401, "{url}: {body}");
    }
    let (status, _) = e.get(&format!("{}/api/runs", e.engine.url), None).await;
    assert_eq!(status, 200);
    let cancel = e
        .http
        .post(format!("{repo_run_url}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 401);
    e.engine.shutdown().await;
}
