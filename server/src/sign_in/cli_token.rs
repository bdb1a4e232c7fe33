//! `POST /sign-in/token`: `plue login` exchanges the one-time code its sign-in ended with,
//! and the verifier of the challenge it started with, for an API token of its user.
//!
//! Invariant: a code is taken once, whatever follows (a wrong verifier cannot be retried),
//! and a disabled user gets no token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plue_store::{now_ms, NewToken};
use plue_vault::tokens;
use serde::Deserialize;
use serde_json::json;

use super::flow::MAX_PARAM;
use super::{pkce, SignIn};

/// How long a token `plue login` gets lives.
const CLI_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, Deserialize)]
pub(super) struct CliTokenBody {
    code: String,
    code_verifier: String,
}

/// `POST /sign-in/token`: `plue login` exchanges its one-time code, with the verifier of
/// the challenge it started with, for an API token of the user (30 days).
pub(super) async fn cli_token(
    State(sign_in): State<SignIn>,
    Json(body): Json<CliTokenBody>,
) -> Response {
    let bad = |status: StatusCode, message: &str| {
        (status, Json(json!({ "error": message }))).into_response()
    };
    if body.code.len() > MAX_PARAM || body.code_verifier.len() > MAX_PARAM {
        return bad(StatusCode::BAD_REQUEST, "code or code_verifier too long");
    }
    let store = &sign_in.0.store;
    let taken = match store
        .take_cli_code(&tokens::hash_token(&body.code), now_ms())
        .await
    {
        Ok(taken) => taken,
        Err(e) => {
            tracing::error!("sign-in: taking a plue login code: {e:#}");
            return bad(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let Some((user_id, provider, challenge)) = taken else {
        return bad(StatusCode::BAD_REQUEST, "unknown, used or expired code");
    };
    // The code is gone either way: a wrong verifier cannot be retried.
    if !pkce::verifies(&body.code_verifier, &challenge) {
        return bad(
            StatusCode::BAD_REQUEST,
            "the code_verifier does not match the challenge",
        );
    }
    let minted = async {
        let user = store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.disabled_at.is_none());
        let Some(user) = user else {
            return Ok::<_, anyhow::Error>(None);
        };
        let token = tokens::new_token()?;
        let expires_at = now_ms() + CLI_TOKEN_TTL_MS;
        let label = sign_in
            .provider(&provider)
            .map(|p| p.label.clone())
            .unwrap_or(provider);
        store
            .create_user_token(&NewToken {
                user_id,
                name: &format!("plue login with {label}"),
                token_hash: &tokens::hash_token(&token),
                max_role: None,
                repos: None,
                expires_at: Some(expires_at),
            })
            .await?;
        Ok(Some(
            json!({ "token": token, "user": user.name, "expires_at": expires_at }),
        ))
    }
    .await;
    match minted {
        Ok(Some(answer)) => Json(answer).into_response(),
        Ok(None) => bad(StatusCode::FORBIDDEN, "the user is disabled"),
        Err(e) => {
            tracing::error!("sign-in: minting a plue login token: {e:#}");
            bad(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
