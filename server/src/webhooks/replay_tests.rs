//! Gitea's replays: the stored body again under a new delivery id is the delivery seen
//! before, on Gitea only; a delivery that failed is forgotten under both of its names.

use axum::body::{to_bytes, Body};
use axum::http::Request as HttpRequest;
use axum::Router;
use tower::ServiceExt;

use super::signature;
use super::tests::{app, push_body, SECRET};

/// `event` of `body` to the `forge` endpoint as delivery `id`, signed with [`SECRET`]
/// as that forge signs: the status and the answer.
async fn deliver_as(
    app: &Router,
    forge: &str,
    event: &str,
    id: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let signature = signature::sign(body.as_bytes(), SECRET);
    let request = match forge {
        "gitea" => HttpRequest::post("/webhooks/gitea")
            .header("x-gitea-event", event)
            .header("x-gitea-delivery", id)
            .header("x-gitea-signature", signature),
        _ => HttpRequest::post("/webhooks/github")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", format!("sha256={signature}")),
    };
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

// Gitea's replay of a delivery sends the body it stored again under a new
// X-Gitea-Delivery (a fresh UUID): a push replayed that way started its runs again.
#[tokio::test]
async fn a_gitea_replay_under_a_new_delivery_id_is_the_same_delivery() {
    let (app, _dir) = app().await;
    let ping = |zen: &str| {
        serde_json::json!({"zen": zen, "hook_id": 7, "repository": {"full_name": "acme/known"}})
            .to_string()
    };
    let first = deliver_as(&app, "gitea", "ping", "uuid-1", &ping("a")).await;
    assert_eq!(
        (first.0, &first.1["duplicate"]),
        (200, &false.into()),
        "{first:?}"
    );
    for id in ["uuid-2", "uuid-2", "uuid-1"] {
        let replayed = deliver_as(&app, "gitea", "ping", id, &ping("a")).await;
        assert_eq!(replayed.0, 200, "{replayed:?}");
        assert_eq!(replayed.1["duplicate"], true, "{id}: {replayed:?}");
    }
    // Another body is another delivery.
    let other = deliver_as(&app, "gitea", "ping", "uuid-3", &ping("b")).await;
    assert_eq!(other.1["duplicate"], false, "{other:?}");
    // GitHub's redelivery keeps its id: a new id is a new delivery, whatever its body.
    for id in ["g-1", "g-2"] {
        let github = deliver_as(&app, "github", "ping", id, &ping("a")).await;
        assert_eq!(github.1["duplicate"], false, "{id}: {github:?}");
    }
    // A delivery that could not be processed is forgotten under both names: its replay
    // is tried again (here: again without an evaluator, 501), not answered as seen.
    let push = push_body("acme/known");
    for id in ["p-1", "p-2"] {
        let (status, answer) = deliver_as(&app, "gitea", "push", id, &push).await;
        assert_eq!(status, 501, "{id}: {answer}");
    }
}
