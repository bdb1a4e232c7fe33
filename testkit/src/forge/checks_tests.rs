//! The fake Checks API validates and answers like GitHub's.

use serde_json::{json, Value};

use crate::forge::{FakeForge, Flavor};

const TOKEN: &str = "app-t0ken";

async fn call(forge: &FakeForge, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/repos/acme/app{path}", forge.api_url());
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), &url)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn annotations(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"path": "src/a.rs", "start_line": i + 1, "end_line": i + 1,
                   "annotation_level": "failure", "message": format!("m{i}")})
        })
        .collect()
}

#[tokio::test]
async fn a_check_run_is_created_completed_and_its_annotations_appended() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    let sha = forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let (status, created) = call(
        &forge,
        "POST",
        "/check-runs",
        Some(json!({"name": "ci", "head_sha": sha, "status": "queued",
                    "details_url": "http://plue/runs/1", "external_id": "1"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            &created["status"],
            &created["conclusion"],
            &created["head_sha"]
        ),
        (&json!("queued"), &Value::Null, &json!(sha))
    );
    let id = created["id"].as_u64().unwrap();
    for batch in [annotations(50), annotations(3)] {
        let (status, updated) = call(
            &forge,
            "PATCH",
            &format!("/check-runs/{id}"),
            Some(json!({"status": "completed", "conclusion": "failure",
                        "output": {"title": "t", "summary": "s", "annotations": batch}})),
        )
        .await;
        assert_eq!(status, 200, "{updated}");
    }
    let (_, got) = call(&forge, "GET", &format!("/check-runs/{id}"), None).await;
    assert_eq!(got["output"]["annotations_count"], 53);
    assert_eq!(got["conclusion"], "failure");
    assert_eq!(got["details_url"], "http://plue/runs/1");
    let (_, listed) = call(
        &forge,
        "GET",
        &format!("/commits/{sha}/check-runs?check_name=ci&filter=all"),
        None,
    )
    .await;
    assert_eq!(listed["total_count"], 1);
    assert_eq!(listed["check_runs"][0]["external_id"], "1");
    let (_, listed) = call(
        &forge,
        "GET",
        &format!("/check-runs/{id}/annotations"),
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 53);
    let kept = forge.check_runs("acme/app");
    assert_eq!(
        (kept.len(), kept[0].annotations.len(), kept[0].writes),
        (1, 53, 3)
    );
}

#[tokio::test]
async fn what_github_refuses_is_a_422_that_changes_nothing() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    let sha = forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let new = |extra: Value| {
        let mut body = json!({"name": "ci", "head_sha": sha});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for refused in [
        json!({"head_sha": sha}),
        json!({"name": "ci"}),
        new(json!({"head_sha": "f".repeat(40)})),
        new(json!({"status": "pending"})),
        new(json!({"status": "completed"})),
        new(json!({"conclusion": "great"})),
        new(json!({"output": {"title": "t"}})),
        new(json!({"output": {"title": "t", "summary": "s", "annotations": annotations(51)}})),
        new(json!({"output": {"title": "t", "summary": "s",
                              "annotations": [{"path": "a", "start_line": 1, "end_line": 1,
                                               "annotation_level": "error", "message": "m"}]}})),
        new(json!({"output": {"title": "t", "summary": "s",
                              "annotations": [{"path": "a", "start_line": 1,
                                               "annotation_level": "notice", "message": "m"}]}})),
    ] {
        let (status, body) = call(&forge, "POST", "/check-runs", Some(refused.clone())).await;
        assert_eq!(status, 422, "{refused}: {body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("Invalid request"));
    }
    assert!(forge.check_runs("acme/app").is_empty());
    let (_, created) = call(&forge, "POST", "/check-runs", Some(new(json!({})))).await;
    let id = created["id"].as_u64().unwrap();
    let (status, _) = call(
        &forge,
        "PATCH",
        &format!("/check-runs/{id}"),
        Some(json!({"conclusion": "success",
                    "output": {"title": "t", "summary": "s", "annotations": annotations(51)}})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(forge.check_runs("acme/app")[0].status, "queued");
    let (status, _) = call(&forge, "PATCH", "/check-runs/999999", Some(json!({}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn gitea_has_no_checks_api() {
    let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
    let sha = forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let (status, _) = call(
        &forge,
        "POST",
        "/check-runs",
        Some(json!({"name": "ci", "head_sha": sha})),
    )
    .await;
    assert_eq!(status, 404);
}
