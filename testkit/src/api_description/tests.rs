//! The check on a small description: each kind of disagreement is found and named, and an
//! exchange that agrees has no finding.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::forge::Answered;

fn description() -> Description {
    Description::of(
        json!({
            "openapi": "3.0.3",
            "paths": {"/repos/{owner}/{repo}/issues": {
                "post": {
                    "operationId": "issues/create",
                    "parameters": [{"$ref": "#/components/parameters/owner"},
                                   {"name": "repo", "in": "path", "required": true,
                                    "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"type": "object", "required": ["title"],
                                   "properties": {"title": {"type": "string"},
                                                  "body": {"type": "string", "nullable": true}}}}}},
                    "responses": {
                        "201": {"description": "", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/issue"}}}},
                        "404": {"$ref": "#/components/responses/not_found"},
                    },
                },
                "get": {
                    "operationId": "issues/list",
                    "parameters": [{"$ref": "#/components/parameters/owner"},
                                   {"name": "repo", "in": "path", "required": true,
                                    "schema": {"type": "string"}},
                                   {"name": "per_page", "in": "query",
                                    "schema": {"type": "integer", "maximum": 100}},
                                   {"name": "state", "in": "query", "required": true,
                                    "schema": {"type": "string", "enum": ["open", "closed"]}}],
                    "responses": {"200": {"description": "", "content": {"application/json": {
                        "schema": {"type": "array", "items": {"$ref": "#/components/schemas/issue"}}}}}},
                },
            }},
            "components": {
                "parameters": {"owner": {"name": "owner", "in": "path", "required": true,
                                         "schema": {"type": "string"}}},
                "responses": {"not_found": {"description": "", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"message": {"type": "string"}}}}}}},
                "schemas": {"issue": {"type": "object", "required": ["number", "html_url"],
                    "properties": {"number": {"type": "integer"},
                                   "html_url": {"type": "string", "format": "uri"},
                                   "body": {"type": "string", "nullable": true}}}},
            },
        }),
        "a test description",
    )
}

fn exchange(method: &str, path: &str, query: &str, body: Value, answer: (u16, Value)) -> Recorded {
    let mut headers = BTreeMap::new();
    if !body.is_null() {
        headers.insert(
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        );
    }
    Recorded {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body,
        answer: Some(Answered {
            status: answer.0,
            body: answer.1,
            headers: Vec::new(),
        }),
    }
}

fn findings(exchange: &Recorded) -> Vec<String> {
    description().check("/api/v3", exchange).findings
}

#[test]
fn an_exchange_as_described_has_no_finding() {
    let issue = json!({"number": 1, "html_url": "http://x/a/b/issues/1", "body": null});
    let created = exchange(
        "POST",
        "/api/v3/repos/a/b/issues",
        "",
        json!({"title": "t", "body": null}),
        (201, issue.clone()),
    );
    let checked = description().check("/api/v3", &created);
    assert_eq!(checked.findings, Vec::<String>::new());
    assert_eq!(
        (checked.operation.as_deref(), checked.status),
        (Some("issues/create"), Some(201))
    );
    let listed = exchange(
        "GET",
        "/api/v3/repos/a/b/issues",
        "state=open&per_page=100",
        Value::Null,
        (200, json!([issue])),
    );
    assert_eq!(findings(&listed), Vec::<String>::new());
    let missing = exchange(
        "POST",
        "/api/v3/repos/a/b/issues",
        "",
        json!({"title": "t"}),
        (404, json!({"message": "Not Found"})),
    );
    assert_eq!(findings(&missing), Vec::<String>::new());
}

// The attacker's side: each way a client or the fake can leave the description is found,
// and the finding names the operation and what is wrong.
#[test]
fn every_disagreement_is_found_and_named() {
    let issue = json!({"number": 1, "html_url": "http://x/a/b/issues/1"});
    let cases = [
        (
            exchange("PUT", "/api/v3/repos/a/b/issues", "", Value::Null, (200, json!(null))),
            "no operation of a test description has this method and path",
        ),
        (
            exchange("GET", "/repos/a/b/issues", "state=open", Value::Null, (200, json!([]))),
            "not below the API's prefix",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=open&head=a:b", Value::Null, (200, json!([]))),
            "issues/list (GET /repos/{owner}/{repo}/issues): query parameter 'head' is not declared",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "per_page=100", Value::Null, (200, json!([]))),
            "the required query parameter 'state' is missing",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=open&per_page=500", Value::Null, (200, json!([]))),
            "query parameter 'per_page' (\"500\")",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=all", Value::Null, (200, json!([]))),
            "query parameter 'state' (\"all\")",
        ),
        (
            exchange("POST", "/api/v3/repos/a/b/issues", "", json!({"body": "x"}), (201, issue.clone())),
            "the request's body at / does not validate",
        ),
        (
            exchange("POST", "/api/v3/repos/a/b/issues", "", Value::Null, (201, issue.clone())),
            "the required JSON body is missing",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=open", json!({"x": 1}), (200, json!([]))),
            "a JSON body was sent, but the operation takes none",
        ),
        (
            exchange("POST", "/api/v3/repos/a/b/issues", "", json!({"title": "t"}), (422, json!({}))),
            "answered 422, a status the operation does not declare (201, 404)",
        ),
        (
            exchange("POST", "/api/v3/repos/a/b/issues", "", json!({"title": "t"}), (201, json!({"number": 1}))),
            "answer 201's body at / does not validate against /paths/~1repos~1{owner}~1{repo}~1issues/post/responses/201/content/application~1json/schema",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=open", Value::Null,
                     (200, json!([{"number": "1", "html_url": "http://x/1"}]))),
            "answer 200's body at /0/number does not validate",
        ),
        (
            exchange("GET", "/api/v3/repos/a/b/issues", "state=open", Value::Null,
                     (200, json!([{"number": 1, "html_url": "not a uri"}]))),
            "at /0/html_url does not validate",
        ),
    ];
    let mut as_text = exchange(
        "POST",
        "/api/v3/repos/a/b/issues",
        "",
        json!({"title": "t"}),
        (201, issue.clone()),
    );
    as_text
        .headers
        .insert("content-type".into(), "text/plain".into());
    let mut unnamed = as_text.clone();
    unnamed.headers.clear();
    let cases = cases.into_iter().chain([
        (
            as_text,
            "a JSON body was sent as text/plain, a media type the operation does not take (application/json)",
        ),
        (unnamed, "a JSON body was sent as no Content-Type"),
    ]);
    for (exchange, expected) in cases {
        let found = findings(&exchange);
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{} {}?{}: expected a finding with {expected:?}, got {found:#?}",
            exchange.method,
            exchange.path,
            exchange.query
        );
    }
}

#[test]
fn reads_are_checked_against_the_answers_schema() {
    let description = description();
    assert_eq!(
        description.check_reads("issues/list", 200, &["[].number", "[].body?"]),
        Vec::<String>::new()
    );
    let found = description.check_reads("issues/create", 201, &["number", "body", "title?"]);
    assert_eq!(
        found,
        [
            "issues/create (POST /repos/{owner}/{repo}/issues): the client needs 'body' of answer 201, which its schema does not require",
            "issues/create (POST /repos/{owner}/{repo}/issues): the client needs 'body' of answer 201, which its schema lets be null",
            "issues/create (POST /repos/{owner}/{repo}/issues): the client reads 'title' of answer 201, which its schema does not have",
        ]
    );
    assert!(description.check_reads("issues/none", 200, &[])[0].contains("no such operation"));
}
