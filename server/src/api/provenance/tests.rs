//! Who may read a run's provenance: per role on a private repository (anonymous,
//! outsider, reader, writer, maintainer, admin), a statement asked for through another
//! run, the keys, public to anyone; and that only a statement whose change landed is
//! served.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use evaluator::plan::{Plan, Step};
use http_body_util::BodyExt;
use plue_store::{NewRun, RunRepo};
use tower::ServiceExt;

use super::super::router;
use crate::testing::{user_with_token, TestApi, TokenScope};

const ENVELOPE: &str = r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"sha256:ab","sig":"AA=="}]}"#;

/// A run of the private repository `acme/app` holding the statement of proposal 7, and
/// another run of `acme/other` the caller will read.
async fn world() -> (TestApi, i64, i64, i64, i64) {
    let api = TestApi::new("admin-token-of-provenance").await;
    let store = api.executor.store().clone();
    let plan = Plan::new("fix", vec![Step::bash("build", "true")]);
    let json = serde_json::to_string(&plan).unwrap();
    let mut runs = Vec::new();
    let mut repos = Vec::new();
    for name in ["acme/app", "acme/other"] {
        let repo_id = plue_store::testing::create_repo(&store, name).await;
        store.set_public_read(repo_id, false).await.unwrap();
        let run_id = api
            .executor
            .start_run(&NewRun {
                workflow_source: name,
                workflow_path: "/w/fix.plue.py",
                repo: Some(RunRepo {
                    repo_id,
                    secrets_allowed: true,
                }),
                ..plue_store::testing::local_run(&plan, &json)
            })
            .await
            .unwrap();
        runs.push(run_id);
        repos.push(repo_id);
    }
    // Proposal 7 was written and the forge accepted it: its statement is applied.
    propose(&store, runs[0], 7).await;
    store
        .record_statement(7, runs[0], "sha256:ab", ENVELOPE)
        .await
        .unwrap();
    assert!(store.mark_applied(7, "https://forge/pr/1").await.unwrap());
    store
        .record_signing_key("sha256:ab", &"11".repeat(32))
        .await
        .unwrap();
    (api, runs[0], runs[1], repos[0], repos[1])
}

/// Proposal `id` of run `run`, being applied.
async fn propose(store: &plue_store::Store, run: i64, id: i64) {
    plue_store::testing::Sql::new(
        "INSERT INTO proposals (id, run_id, step_run_id, attempt_id, position, kind, payload, \
         state, created_at) VALUES ($1, $2, 1, 1, $1, 'pull_request', '{}', 'applying', 0)",
    )
    .bind(id)
    .bind(run)
    .execute(store)
    .await;
}

async fn get(api: &TestApi, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(api.state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_statement_is_read_by_the_runs_readers_only() {
    let (api, run, _, repo, _) = world().await;
    let store = api.executor.store().clone();
    let mut tokens: Vec<(&str, Option<String>)> = vec![("anonymous", None)];
    let (_, _, outsider) = user_with_token(&store, "outsider", TokenScope::default()).await;
    tokens.push(("outsider", Some(outsider)));
    for role in ["reader", "writer", "maintainer"] {
        let (user, _, token) = user_with_token(&store, role, TokenScope::default()).await;
        store.grant_role(repo, user, role).await.unwrap();
        tokens.push((role, Some(token)));
    }
    tokens.push(("admin", Some("admin-token-of-provenance".into())));
    let one = format!("/api/runs/{run}/proposals/7/provenance");
    let all = format!("/api/runs/{run}/provenance");
    for (who, token) in &tokens {
        let (status, body) = get(&api, &one, token.as_deref()).await;
        let (listed, list) = get(&api, &all, token.as_deref()).await;
        match *who {
            "anonymous" => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
                assert_eq!(listed, StatusCode::UNAUTHORIZED, "{who}: {list}");
            }
            "outsider" => {
                assert_eq!(status, StatusCode::NOT_FOUND, "{who}: {body}");
                assert_eq!(listed, StatusCode::NOT_FOUND, "{who}: {list}");
            }
            _ => {
                assert_eq!(status, StatusCode::OK, "{who}: {body}");
                // Served exactly as signed.
                assert_eq!(body, ENVELOPE, "{who}");
                assert_eq!(listed, StatusCode::OK, "{who}: {list}");
                let list: serde_json::Value = serde_json::from_str(&list).unwrap();
                assert_eq!(list[0]["proposal_id"], 7, "{who}");
                assert_eq!(list[0]["state"], "applied", "{who}");
                assert_eq!(list[0]["reason"], serde_json::Value::Null, "{who}");
                assert_eq!(list[0]["envelope"]["payload"], "e30=", "{who}");
            }
        }
        assert!(!matches!(*who, "anonymous" | "outsider") || !body.contains("e30="));
    }
}

// The attacker reads a run of their own repository and asks it for another run's
// statement by the proposal's id: nothing.
#[tokio::test]
async fn a_statement_is_not_reached_through_another_run() {
    let (api, _, other_run, _, other_repo) = world().await;
    let store = api.executor.store().clone();
    let (user, _, token) = user_with_token(&store, "mallory", TokenScope::default()).await;
    store
        .grant_role(other_repo, user, "maintainer")
        .await
        .unwrap();
    let (status, body) = get(
        &api,
        &format!("/api/runs/{other_run}/proposals/7/provenance"),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.contains("e30="), "{body}");
    let (status, body) = get(
        &api,
        &format!("/api/runs/{other_run}/provenance"),
        Some(&token),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
}

// The attack: the engine signs a statement before it writes the change; the forge refused
// the push, yet the statement was served as signed, a reader rebuilt the commit from it and
// `plue verify` called it the agent's change. Now a statement whose change has not landed
// is listed with its state (and a failed one with the reason) but without its envelope,
// and its own URL answers 409 with the reason instead of the envelope.
#[tokio::test]
async fn a_statement_whose_change_did_not_land_is_not_served() {
    let (api, run, ..) = world().await;
    let store = api.executor.store().clone();
    for id in [8, 9] {
        propose(&store, run, id).await;
        store
            .record_statement(id, run, "sha256:ab", ENVELOPE)
            .await
            .unwrap();
    }
    let refused = "the forge refused the push of plue/run-1-fix: protected branch";
    assert!(store.mark_failed(8, refused, None).await.unwrap());
    let admin = Some("admin-token-of-provenance");
    let (status, body) = get(&api, &format!("/api/runs/{run}/provenance"), admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let states: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["proposal_id"].as_i64().unwrap(),
                s["state"].as_str().unwrap(),
                s["reason"].as_str(),
                s["envelope"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (7, "applied", None, false),
            (8, "failed", Some(refused), true),
            (9, "pending", None, true),
        ]
    );
    let (status, body) = get(
        &api,
        &format!("/api/runs/{run}/proposals/8/provenance"),
        admin,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains("did not land") && error.contains(refused),
        "{error}"
    );
    assert!(!body.contains("e30="), "{body}");
    let (status, body) = get(
        &api,
        &format!("/api/runs/{run}/proposals/9/provenance"),
        admin,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("not landed yet"), "{body}");
    // Once the forge accepts the pending one's write, it is served.
    assert!(store.mark_applied(9, "https://forge/c/1").await.unwrap());
    let (status, body) = get(
        &api,
        &format!("/api/runs/{run}/proposals/9/provenance"),
        admin,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ENVELOPE));
}

#[tokio::test]
async fn the_keys_are_public() {
    let (api, ..) = world().await;
    let (status, body) = get(&api, "/api/provenance/keys", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys[0]["keyid"], "sha256:ab");
    assert_eq!(keys[0]["keytype"], "ed25519");
    assert_eq!(keys[0]["public"], "11".repeat(32));
}
