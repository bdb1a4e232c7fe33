//! The HTTP middleware that counts every request by method, route template and status,
//! and times it to its response headers.
//!
//! Invariant: the route label is the matched template (`/api/runs/{id}`), never the raw
//! path, so ids and probes of unknown paths (`unmatched`) cannot grow the series.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use plue_core::metrics::{record, Event};

/// `axum::middleware::from_fn(track_http)`.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    record(Event::HttpRequest {
        method,
        route: &route,
        status: response.status().as_u16(),
        seconds: started.elapsed().as_secs_f64(),
    });
    response
}
