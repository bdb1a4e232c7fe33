//! The document against the router: it is OpenAPI 3.x and self-contained, and the real
//! router serves every (method, path) it lists — answering one of the statuses listed for
//! it — and nothing else on those paths (405), so a route added without its
//! `#[utoipa::path]` fails here.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::super::{openapi, router};
use crate::testing::TestApi;

const ADMIN: &str = "openapi-test-admin-token";

/// Every method a route could be given (HEAD follows GET in axum, as in HTTP).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

fn document() -> Value {
    let text = serde_json::to_string(&openapi()).expect("the document serializes");
    serde_json::from_str(&text).expect("the document parses as JSON")
}

/// A concrete path for a templated one: valid names and ids that exist nowhere.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{step}", "build")
        .replace("{owner}", "octo")
        .replace("{name}", "hello")
        .replace("{secret}", "TOKEN")
}

#[test]
fn the_document_is_openapi_3_and_self_contained() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "OpenAPI {version}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with("/api/"), "{path} is not under /api");
        for (method, operation) in item.as_object().unwrap() {
            // utoipa names an operation after its handler; two `list`s would collide.
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(operation_ids.insert(id), "operationId {id} twice");
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let response = resolved(&doc, response);
                    assert!(
                        response["description"]
                            .as_str()
                            .is_some_and(|d| !d.is_empty()),
                        "{method} {path} {status} says nothing"
                    );
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
            // Writes need a token: their operations must say so.
            if method != "get" {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{"bearer": []}]),
                    "{method} {path}"
                );
            }
        }
    }
    // Every reference resolves: to a schema, or to one of the answers operations share.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let shared = doc["components"]["responses"]
        .as_object()
        .expect("shared responses");
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        if let Some(name) = target.strip_prefix("#/components/responses/") {
            assert!(shared.contains_key(name), "no response {name}");
            continue;
        }
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the document: {target}"));
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // A shared answer is used, and a 401 or 500 said alike twice is shared, not copied.
    let used: BTreeSet<&str> = text
        .split("\"$ref\":\"#/components/responses/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(
        used,
        shared.keys().map(String::as_str).collect(),
        "unused shared answers"
    );
    let mut inline = BTreeSet::new();
    for operation in paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
    {
        for (status, response) in operation["responses"].as_object().unwrap() {
            if let (true, Some(words)) = (
                status == "401" || status == "500",
                response["description"].as_str(),
            ) {
                assert!(
                    inline.insert((status.clone(), words.to_string())),
                    "{status} \"{words}\" is written out twice: share it (openapi.rs)"
                );
            }
        }
    }
    // The error schema is what ApiError sends.
    let sent = serde_json::to_value(plue_types::protocol::ErrorBody { error: "x".into() }).unwrap();
    let fields: BTreeSet<&str> = sent
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let declared: BTreeSet<&str> = schemas["Error"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(fields, declared);
}

/// `response` itself, or the shared answer it refers to (`#/components/responses/...`).
fn resolved<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(target) => {
            let name = target
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("a response reference elsewhere: {target}"));
            &doc["components"]["responses"][name]
        }
        None => response,
    }
}

#[test]
fn routes_are_registered_only_from_their_documentation() {
    // A `.route("/api/...", ...)` beside `routes!` would serve a path no document lists.
    for (file, source) in [
        ("mod.rs", include_str!("mod.rs")),
        ("openapi.rs", include_str!("openapi.rs")),
    ] {
        assert!(
            !source.contains(concat!(".route", "(")),
            "{file} adds a route by hand: register it with `routes!` from its #[utoipa::path]"
        );
    }
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let api = TestApi::new(ADMIN).await;
    let app = router(api.state);
    let doc = document();
    let mut served = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = concrete(path);
        for method in METHODS {
            let key = method.as_str().to_ascii_lowercase();
            let request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            match item.get(&key) {
                Some(operation) => {
                    // An unrouted request answers axum's bare 404 or the 405 fallback.
                    assert!(
                        status != StatusCode::METHOD_NOT_ALLOWED
                            && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                        "{method} {uri} is documented but not served ({status})"
                    );
                    assert!(
                        operation["responses"].get(status.as_str()).is_some(),
                        "{method} {uri} answered {status}, which its operation does not list: {}",
                        String::from_utf8_lossy(&body)
                    );
                    served += 1;
                }
                None => assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri} is served but not documented"
                ),
            }
        }
    }
    assert!(served >= 25, "only {served} operations");
}
