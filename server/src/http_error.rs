//! The one error type HTTP handlers return, and its response: a status and a JSON body
//! `{"error": "..."}`.
//!
//! Invariant: 4xx bodies say what was wrong with the request; 5xx bodies say nothing
//! internal — the detail goes to the log.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plue_types::protocol::ErrorBody;

#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or invalid (400, or the given 4xx).
    Client(StatusCode, String),
    /// Something failed inside the engine (500; logged, not shown).
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::Client(StatusCode::BAD_REQUEST, message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::Client(StatusCode::NOT_FOUND, message.into())
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Client(StatusCode::UNAUTHORIZED, message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::Client(StatusCode::FORBIDDEN, message.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::Internal(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::Client(status, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            ApiError::Client(status, message) => (status, message),
            ApiError::Internal(error) => {
                tracing::error!("request failed: {error:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
