//! Calling the public API in-process on behalf of a signed-in user: the dashboard's writes
//! and its log stream are the API's own handlers, reached through the API's router as the
//! session's [`Caller`](crate::access::Caller).
//!
//! Invariant: the API decides. The dashboard hands on only the session's caller (in the
//! request's extensions, which the API's [`resolve`](crate::access::resolve) middleware
//! keeps: no browser can put one there) and the headers named by the call — never an
//! `Authorization` header nor a token, which the session does not have — so the dashboard
//! never grants more than the API grants that user.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderName, Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use tower::ServiceExt;

use super::error::{WebError, WebResult};
use super::session::Session;
use super::Web;

/// The browser's address, handed on so the API's per-client limits (log followers) count
/// the browser, not the dashboard (through a trusted proxy, with the `X-Forwarded-For`
/// the caller passes on).
pub(super) type Client = Option<Extension<ConnectInfo<SocketAddr>>>;

/// An API request made for the dashboard.
pub(super) struct ApiCall<'a> {
    pub(super) method: Method,
    pub(super) uri: &'a str,
    /// Headers of the browser's request handed on (e.g. `Accept`, `Last-Event-ID`).
    pub(super) pass: &'a [HeaderName],
    /// A JSON body.
    pub(super) json: Option<serde_json::Value>,
}

/// Sends `call` to the API as the session's caller, with the `pass` headers of the
/// browser's `headers` and the browser's address.
pub(super) async fn call(
    web: &Web,
    session: &Session,
    call: ApiCall<'_>,
    headers: &HeaderMap,
    client: Client,
) -> WebResult<Response> {
    let ApiCall {
        method,
        uri,
        pass,
        json,
    } = call;
    let mut request = Request::builder().method(method).uri(uri);
    for name in pass {
        // The API knows the caller from the extension alone: no credential rides along.
        if matches!(*name, header::AUTHORIZATION | header::COOKIE) {
            continue;
        }
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    let body = match json {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let mut request = request
        .body(body)
        .map_err(|e| WebError::Internal(anyhow::anyhow!("building an API request: {e}")))?;
    if let Some(Extension(info)) = client {
        request.extensions_mut().insert(info);
    }
    request.extensions_mut().insert(session.caller.clone());
    let response = web.api.clone().oneshot(request).await;
    // The router's error type is `Infallible`.
    Ok(response.unwrap_or_else(|never| match never {}))
}

/// [`call`], with an API error answer turned into the dashboard's error (as [`api_error`]
/// words it); a successful answer is returned as it is.
pub(super) async fn call_ok(
    web: &Web,
    session: &Session,
    request: ApiCall<'_>,
    headers: &HeaderMap,
    client: Client,
) -> WebResult<Response> {
    let response = call(web, session, request, headers, client).await?;
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    Ok(response)
}

/// A dashboard form's write: the signed-in session of `headers`, whose CSRF token the form
/// sent as `csrf`, POSTs `json` (if any) to the API's `api_path`; the API's successful
/// answer, or its error as the dashboard's.
pub(super) async fn post(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
    api_path: &str,
    json: Option<serde_json::Value>,
) -> WebResult<Response> {
    let session = Session::load(web, headers).await?;
    session.check_write(headers, csrf)?;
    let request = ApiCall {
        method: Method::POST,
        uri: api_path,
        pass: &[],
        json,
    };
    call_ok(web, &session, request, headers, None).await
}

/// A redirect to the run a successful API answer `{"run_id": N}` created (a dispatch or a
/// re-run, which `what` names in the errors: `the re-run's answer has no run_id: ...`).
pub(super) async fn show_created_run(response: Response, what: &str) -> WebResult<Response> {
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| WebError::Internal(anyhow::anyhow!("reading {what}'s answer: {e}")))?;
    let created: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| WebError::Internal(anyhow::anyhow!("{what}'s answer: {e}")))?;
    match created["run_id"].as_i64() {
        Some(run_id) => Ok(Redirect::to(&format!("/runs/{run_id}")).into_response()),
        None => Err(WebError::Internal(anyhow::anyhow!(
            "{what}'s answer has no run_id: {created}"
        ))),
    }
}

/// The `{"error": "..."}` message of an API error response, as a dashboard error page
/// with the API's status.
pub(super) async fn api_error(response: Response) -> WebError {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "the API refused the request".to_string());
    // The API's 5xx bodies say nothing internal (its invariant), so they can be shown.
    if status == StatusCode::UNAUTHORIZED {
        WebError::Client(
            StatusCode::UNAUTHORIZED,
            format!("{message}: sign in again."),
        )
    } else {
        WebError::Client(status, message)
    }
}
