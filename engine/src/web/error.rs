//! The dashboard's error type and its response: an HTML page with the status, never JSON.
//!
//! Invariant: like the API's errors, a 5xx page says nothing internal (the detail goes to
//! the log); a 401 page carries the sign-in form so the user can recover where they are.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::render;

#[derive(Debug)]
pub(super) enum WebError {
    /// The request is wrong or names nothing, or the API refused it: the given status with a
    /// message for the user.
    Client(StatusCode, String),
    /// Reads are private and the request carries no valid token: the sign-in page (401).
    SignIn { next: String, message: String },
    /// Something failed inside the engine (500; logged, not shown).
    Internal(anyhow::Error),
}

pub(super) type WebResult<T> = Result<T, WebError>;

impl WebError {
    pub(super) fn not_found(message: impl Into<String>) -> WebError {
        WebError::Client(StatusCode::NOT_FOUND, message.into())
    }

    pub(super) fn bad_request(message: impl Into<String>) -> WebError {
        WebError::Client(StatusCode::BAD_REQUEST, message.into())
    }

    pub(super) fn forbidden(message: impl Into<String>) -> WebError {
        WebError::Client(StatusCode::FORBIDDEN, message.into())
    }
}

impl From<anyhow::Error> for WebError {
    fn from(error: anyhow::Error) -> Self {
        WebError::Internal(error)
    }
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct SignInPage<'a> {
    next: &'a str,
    message: &'a str,
    signed_in: bool,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, page) = match &self {
            WebError::Client(status, message) => (
                *status,
                render::page(
                    "error.html",
                    &ErrorPage {
                        status: status.as_u16(),
                        title: status.canonical_reason().unwrap_or("Error"),
                        message,
                    },
                ),
            ),
            WebError::SignIn { next, message } => (
                StatusCode::UNAUTHORIZED,
                render::page(
                    "login.html",
                    &SignInPage {
                        next,
                        message,
                        signed_in: false,
                    },
                ),
            ),
            WebError::Internal(error) => {
                tracing::error!("dashboard: {error:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    render::page(
                        "error.html",
                        &ErrorPage {
                            status: 500,
                            title: "Internal error",
                            message: "Something failed inside the engine; its log says what.",
                        },
                    ),
                )
            }
        };
        match page {
            Ok(html) => (status, Html(html)).into_response(),
            // The error page itself did not render: plain text, still no detail.
            Err(e) => {
                tracing::error!("dashboard: rendering an error page: {e:#}");
                (status, status.to_string()).into_response()
            }
        }
    }
}
