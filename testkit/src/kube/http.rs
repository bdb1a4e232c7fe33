//! The wire side of the fake API server: paths (`/api/v1/namespaces/NS/pods/NAME`,
//! `/apis/GROUP/VERSION/namespaces/NS/RESOURCE`), list with selectors and `limit`/
//! `continue`, chunked watch streams (one JSON event per line, `BOOKMARK`s when asked,
//! an `ERROR` event carrying a 410 `Expired` Status for a version too old), create, replace,
//! merge patch, delete, and `Status` bodies for every refusal — plus the faults a test
//! scripts ([`super::Fault`]) and the audit log ([`super::Recorded`]).
//!
//! Invariant: every request is recorded before it is answered, faults included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures::SinkExt;
use serde_json::{json, Value};

use super::selector::{FieldSelector, LabelSelector};
use super::store::{kind_of, Change, Key, Refusal};
use super::{Recorded, Shared};

/// Where a request points.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (res, name, sub) = match rest {
        [res] => (*res, None, None),
        [res, name] => (*res, Some(name.to_string()), None),
        [res, name, sub] => (*res, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let resource = if group.is_empty() {
        res.to_string()
    } else {
        format!("{group}/{res}")
    };
    Some(Target {
        resource,
        namespace,
        name,
        subresource: sub,
    })
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn refusal(r: Refusal, target: &Target) -> Response {
    let name = target.name.clone().unwrap_or_default();
    let (kind, _) = kind_of(&target.resource);
    let what = format!("{}s \"{name}\"", kind.to_lowercase());
    let (code, reason, message) = match r {
        Refusal::NotFound => (404, "NotFound", format!("{what} not found")),
        Refusal::AlreadyExists => (409, "AlreadyExists", format!("{what} already exists")),
        Refusal::Conflict(m) => (
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {what}: {m}"),
        ),
        Refusal::Expired(rv) => (410, "Expired", format!("too old resource version: {rv}")),
        Refusal::Invalid(m) => (422, "Invalid", m),
    };
    let mut body = status(code, reason, &message);
    body["details"] = json!({"name": name, "kind": target.resource});
    json_response(code, &body)
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = uri.path().to_string();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let Some(target) = target(&path) else {
        let answer = if path == "/version" {
            json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-plue-testkit"}),
            )
        } else {
            json_response(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("the server could not find the requested resource {path}"),
                ),
            )
        };
        shared.record(
            &method,
            &path,
            &query,
            None,
            answer.status().as_u16(),
            watch,
        );
        return answer;
    };
    if let Some(fault) = shared.take_fault(&method, &target.resource, watch) {
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        let mut body = status(fault.status, fault.reason(), "injected by the test");
        let mut response = Response::builder()
            .status(fault.status)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(secs) = fault.retry_after {
            body["details"] = json!({"retryAfterSeconds": secs});
            response = response.header(header::RETRY_AFTER, secs.to_string());
        }
        shared.record(
            &method,
            &path,
            &query,
            Some(&target.resource),
            fault.status,
            watch,
        );
        return response
            .body(Body::from(body.to_string()))
            .unwrap_or_default();
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                shared.record(&method, &path, &query, Some(&target.resource), 400, watch);
                return json_response(
                    400,
                    &status(400, "BadRequest", &format!("the body is not JSON: {e}")),
                );
            }
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = if watch && method == Method::GET {
        watch_stream(&shared, &target, &query)
    } else {
        answer(&shared, &method, &target, &query, body, &content_type)
    };
    shared.record(
        &method,
        &path,
        &query,
        Some(&target.resource),
        answer.status().as_u16(),
        watch,
    );
    answer
}

fn selectors(query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), Value> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str));
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str));
    match (labels, fields) {
        (Ok(l), Ok(f)) => Ok((l, f)),
        (Err(e), _) | (_, Err(e)) => Err(status(400, "BadRequest", &e)),
    }
}

fn answer(
    shared: &Shared,
    method: &Method,
    target: &Target,
    query: &HashMap<String, String>,
    body: Option<Value>,
    content_type: &str,
) -> Response {
    let mut store = shared.store();
    let key = |name: &str| Key {
        resource: target.resource.clone(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
    };
    let done = |result: Result<Value, Refusal>, code: u16| match result {
        Ok(object) => json_response(code, &object),
        Err(r) => refusal(r, target),
    };
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) => {
            let (labels, fields) = match selectors(query) {
                Ok(s) => s,
                Err(body) => return json_response(400, &body),
            };
            let items: Vec<Value> = store
                .list(&target.resource, target.namespace.as_deref())
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .collect();
            let offset: usize = query
                .get("continue")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
            let end = if limit == 0 {
                items.len()
            } else {
                (offset + limit).min(items.len())
            };
            let page: Vec<Value> = items
                .get(offset.min(items.len())..end)
                .unwrap_or_default()
                .to_vec();
            let (kind, api_version) = kind_of(&target.resource);
            let mut metadata = json!({"resourceVersion": store.version().to_string()});
            if end < items.len() {
                metadata["continue"] = json!(end.to_string());
                metadata["remainingItemCount"] = json!(items.len() - end);
            }
            json_response(
                200,
                &json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": metadata, "items": page}),
            )
        }
        (Method::GET, Some(name)) => match store.get(&key(name)) {
            Some(object) => json_response(200, object),
            None => refusal(Refusal::NotFound, target),
        },
        (Method::POST, None) => {
            let Some(mut object) = body else {
                return json_response(400, &status(400, "BadRequest", "a create needs a body"));
            };
            let name =
                match object["metadata"]["name"].as_str() {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => match object["metadata"]["generateName"].as_str() {
                        Some(prefix) => format!("{prefix}{:05x}", store.version() % 0xfffff),
                        None => return json_response(
                            422,
                            &status(
                                422,
                                "Invalid",
                                "metadata.name: Required value: name or generateName is required",
                            ),
                        ),
                    },
                };
            if let Some(rv) = object["metadata"]["resourceVersion"]
                .as_str()
                .filter(|rv| !rv.is_empty())
            {
                let message = format!(
                    "metadata.resourceVersion: Invalid value: {rv:?}: must be empty on create"
                );
                return json_response(422, &status(422, "Invalid", &message));
            }
            object["metadata"]["name"] = json!(name);
            if target.resource == "pods" {
                object["status"] = json!({"phase": "Pending"});
            }
            let result = store.create(&key(&name), object);
            drop(store);
            shared.wake_kubelet();
            done(result, 201)
        }
        (Method::PUT, Some(name)) => {
            let Some(object) = body else {
                return json_response(400, &status(400, "BadRequest", "a replace needs a body"));
            };
            let result = if target.subresource.as_deref() == Some("status") {
                let status_part = object["status"].clone();
                let rv = object["metadata"]["resourceVersion"].clone();
                store.merge_patch(
                    &key(name),
                    &json!({"metadata": {"resourceVersion": rv}, "status": status_part}),
                )
            } else {
                store.replace(&key(name), object)
            };
            done(result, 200)
        }
        (Method::PATCH, Some(name)) => {
            let Some(patch) = body else {
                return json_response(400, &status(400, "BadRequest", "a patch needs a body"));
            };
            if content_type.starts_with("application/json-patch") {
                return json_response(
                    415,
                    &status(
                        415,
                        "UnsupportedMediaType",
                        "this test server takes merge patches only",
                    ),
                );
            }
            let result = if content_type.starts_with("application/apply-patch")
                && store.get(&key(name)).is_none()
            {
                store.create(&key(name), patch)
            } else {
                store.merge_patch(&key(name), &patch)
            };
            done(result, 200)
        }
        (Method::DELETE, Some(name)) => {
            let options = body.unwrap_or(Value::Null);
            let k = key(name);
            let Some(stored) = store.get(&k) else {
                return refusal(Refusal::NotFound, target);
            };
            for (field, pointer) in [
                ("uid", "/metadata/uid"),
                ("resourceVersion", "/metadata/resourceVersion"),
            ] {
                let wanted = &options["preconditions"][field];
                if !wanted.is_null() && stored.pointer(pointer) != Some(wanted) {
                    let message = format!(
                        "Precondition failed: {field}: {wanted}, object: {}",
                        stored.pointer(pointer).unwrap_or(&Value::Null)
                    );
                    return refusal(Refusal::Conflict(message), target);
                }
            }
            let grace = options["gracePeriodSeconds"].as_i64().unwrap_or(30);
            let on_node = target.resource == "pods"
                && shared.kubelet_attached()
                && stored["spec"]["nodeName"].is_string()
                && !matches!(
                    stored["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                )
                && grace > 0;
            let result = if on_node {
                store.mark_deleting(&k, grace)
            } else {
                store.remove(&k)
            };
            drop(store);
            shared.wake_kubelet();
            done(result, 200)
        }
        _ => json_response(
            405,
            &status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not supported here"),
            ),
        ),
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch_stream(
    shared: &Arc<Shared>,
    target: &Target,
    query: &HashMap<String, String>,
) -> Response {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(body) => return json_response(400, &body),
    };
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let (resource, namespace) = (target.resource.clone(), target.namespace.clone());
    let relevant = move |c: &Change| {
        c.resource == resource && namespace.as_ref().is_none_or(|n| *n == c.namespace)
    };
    let matches = move |o: &Value| labels.matches(o) && fields.matches(o);
    // Under the store's lock: the replay and the subscription meet exactly.
    let (replay, mut live, mut last_rv, expired) = {
        let store = shared.store();
        let live = store.changes.subscribe();
        let now = store.version();
        if since == 0 || initial_events {
            let objects = store.list(&target.resource, target.namespace.as_deref());
            let replay: Vec<(&'static str, Value)> =
                objects.into_iter().map(|o| ("ADDED", o)).collect();
            (replay, live, now, None)
        } else {
            match store.changes_since(since) {
                Ok(changes) => (
                    changes
                        .into_iter()
                        .filter(|c| relevant(c))
                        .map(|c| (c.kind, c.object))
                        .collect(),
                    live,
                    now,
                    None,
                ),
                Err(r) => (Vec::new(), live, now, Some(r)),
            }
        }
    };
    let (kind, api_version) = kind_of(&target.resource);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let mut dropped = shared.drop_watches.subscribe();
    let bookmark_every = shared.bookmark_every;
    tokio::spawn(async move {
        if let Some(Refusal::Expired(rv)) = expired {
            let gone = status(
                410,
                "Expired",
                &format!("too old resource version: {rv} ({last_rv})"),
            );
            let _ = tx.send(Ok(event_line("ERROR", &gone))).await;
            return;
        }
        for (event, object) in replay {
            if matches(&object) && tx.send(Ok(event_line(event, &object))).await.is_err() {
                return;
            }
        }
        let bookmark = |rv: u64, initial_end: bool| {
            let mut object = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}});
            if initial_end {
                object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line("BOOKMARK", &object)
        };
        if initial_events && bookmarks && tx.send(Ok(bookmark(last_rv, true))).await.is_err() {
            return;
        }
        let end = Instant::now() + timeout;
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(change) => {
                        if change.rv <= last_rv {
                            continue;
                        }
                        last_rv = last_rv.max(change.rv);
                        if relevant(&change) && matches(&change.object)
                            && tx.send(Ok(event_line(change.kind, &change.object))).await.is_err() {
                            return;
                        }
                    }
                    // Too slow a reader: close, as a real server does; it resumes or relists.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last_rv, false))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(end.into()) => return,
                _ = dropped.changed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(rx))
        .unwrap_or_default()
}

impl Shared {
    fn record(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        resource: Option<&str>,
        status: u16,
        watch: bool,
    ) {
        let mut query: Vec<(String, String)> =
            query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        query.sort();
        self.requests().push(Recorded {
            method: method.to_string(),
            path: path.to_string(),
            query,
            resource: resource.map(str::to_string),
            status,
            watch,
        });
    }
}
