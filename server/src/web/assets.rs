//! `/assets/{file}`: the dashboard's stylesheet and scripts, compiled into the binary.
//!
//! Invariant: only the files listed here are served, each with its own content type;
//! any other name is a 404 (no file system access, no path to traverse).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "failure.css",
        "text/css; charset=utf-8",
        include_str!("assets/failure.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
    (
        "dag.css",
        "text/css; charset=utf-8",
        include_str!("assets/dag.css"),
    ),
    (
        "dag.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dag.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    ),
    (
        "time.css",
        "text/css; charset=utf-8",
        include_str!("assets/time.css"),
    ),
    (
        "time.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/time.js"),
    ),
    (
        "status.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/status.js"),
    ),
    (
        "log.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/log.js"),
    ),
    (
        "dispatch.css",
        "text/css; charset=utf-8",
        include_str!("assets/dispatch.css"),
    ),
    (
        "approval.css",
        "text/css; charset=utf-8",
        include_str!("assets/approval.css"),
    ),
];

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Short: a new engine version's assets are picked up within a minute.
                (header::CACHE_CONTROL, "public, max-age=60"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
