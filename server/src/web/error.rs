//! The dashboard's error type and its response: an HTML page with the status, never JSON.
//!
//! Invariants: like the API's errors, a 5xx page says nothing internal (the detail goes to
//! the log); a 401 page carries the sign-in form so the user can recover where they are.
//! An error page keeps the header's sign-in corner: the response carries its
//! [`ErrorPage`] as an extension and `session::with_chrome` (a layer on every dashboard
//! route and on the fallback) renders it again with the session's [`Chrome`].

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::chrome::Chrome;
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

/// What an error page shows; kept in the response's extensions for
/// [`with_chrome`](super::session::with_chrome).
#[derive(Debug, Clone, Serialize)]
pub(super) struct ErrorPage {
    status: u16,
    title: String,
    message: String,
    /// The header's corner (sign in / the user and sign out); none until `with_chrome`.
    pub(super) chrome: Option<Chrome>,
}

impl ErrorPage {
    fn new(status: StatusCode, title: &str, message: &str) -> ErrorPage {
        ErrorPage {
            status: status.as_u16(),
            title: title.to_string(),
            message: message.to_string(),
            chrome: None,
        }
    }

    pub(super) fn respond(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match render::page("error.html", self) {
            Ok(html) => {
                let mut response = (status, Html(html)).into_response();
                response.extensions_mut().insert(self.clone());
                response
            }
            // The error page itself did not render: plain text, still no detail.
            Err(e) => {
                tracing::error!("dashboard: rendering an error page: {e:#}");
                (status, status.to_string()).into_response()
            }
        }
    }
}

/// The dashboard's answer to a URL no route matches: an HTML 404 page. Paths under the
/// machine interfaces (`/api/`, `/internal/`, `/webhooks/`) keep the API's JSON 404.
pub(super) async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    let machine = ["/api", "/internal", "/webhooks"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    if machine {
        return crate::internal_api::not_found().await.into_response();
    }
    WebError::not_found(
        "There is no page here. The runs, repositories and runners are linked above.",
    )
    .into_response()
}

/// A 401 sign-in page's `next` and message, kept in the response's extensions: `with_chrome`
/// renders it again with the sign-in providers' links (`crate::sign_in`).
#[derive(Debug, Clone)]
pub(super) struct SignInPrompt {
    pub(super) next: String,
    pub(super) message: String,
}

#[derive(Serialize)]
struct SignInPage<'a> {
    next: &'a str,
    message: &'a str,
    signed_in: bool,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match &self {
            WebError::Client(status, message) => ErrorPage::new(
                *status,
                status.canonical_reason().unwrap_or("Error"),
                message,
            )
            .respond(),
            WebError::SignIn { next, message } => {
                let page = render::page(
                    "login.html",
                    &SignInPage {
                        next,
                        message,
                        signed_in: false,
                    },
                );
                match page {
                    Ok(html) => {
                        let mut response = (StatusCode::UNAUTHORIZED, Html(html)).into_response();
                        response.extensions_mut().insert(SignInPrompt {
                            next: next.clone(),
                            message: message.clone(),
                        });
                        response
                    }
                    Err(e) => {
                        tracing::error!("dashboard: rendering the sign-in page: {e:#}");
                        (StatusCode::UNAUTHORIZED, "401 Unauthorized").into_response()
                    }
                }
            }
            WebError::Internal(error) => {
                tracing::error!("dashboard: {error:#}");
                ErrorPage::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "Something failed inside the engine; its log says what.",
                )
                .respond()
            }
        }
    }
}
