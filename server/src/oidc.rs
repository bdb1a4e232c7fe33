//! The engine as an OpenID Connect issuer, for the tokens it signs for steps
//! ([`plue_core::id_tokens`]): `GET /.well-known/openid-configuration` (the discovery
//! document) and `GET /.well-known/jwks` (its keys), where relying parties — a cloud's
//! identity federation, Vault's JWT auth — look for them.
//!
//! Invariants: both are public and read nothing but the published keys; the issuer they
//! name is the one every token carries (`--public-url`, else the engine's own URL).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use plue_core::executor::Executor;

use crate::http_error::ApiResult;

/// What the issuer's routes read.
#[derive(Clone)]
pub struct OidcState {
    pub executor: Arc<Executor>,
    /// The tokens' `iss`.
    pub issuer: Arc<str>,
    /// The keys the runner protocol's claims sign with.
    pub keys: Arc<plue_core::id_tokens::IdTokens>,
}

pub fn router(state: OidcState) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(configuration))
        .route("/.well-known/jwks", get(jwks))
        .with_state(state)
}

/// Relying parties fetch these often; a rotation shows within five minutes.
const CACHE: &str = "public, max-age=300";

async fn configuration(State(state): State<OidcState>) -> Response {
    let document = plue_core::id_tokens::discovery(&state.issuer);
    ([(header::CACHE_CONTROL, CACHE)], Json(document)).into_response()
}

async fn jwks(State(state): State<OidcState>) -> ApiResult<Response> {
    let keys = state.keys.jwks(&state.executor).await?;
    Ok(([(header::CACHE_CONTROL, CACHE)], Json(keys)).into_response())
}
