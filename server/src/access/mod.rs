//! Who may do what: users, their tokens and sessions, roles per repository, public reads,
//! and the checks every handler asks ([`Caller`]).
//!
//! The API's middleware ([`resolve`]) turns a request's credentials into a [`Caller`]
//! once and hands it to handlers as an extractor; the dashboard resolves its session
//! cookie with the same [`Resolver`]. Handlers then ask the caller: [`Caller::visible_run`],
//! [`Caller::visible_repo`], [`Caller::require_repo`], [`Caller::require_admin`],
//! [`Caller::readable`] for lists, [`Caller::may_decide`] for gates.
//!
//! Architecture Invariants:
//! - Every `/api` route but the OpenAPI document runs behind [`resolve`]; a request with
//!   invalid credentials never reaches a handler.
//! - Identity is a user id. A token's name is a label; no rule compares it.
//! - This module reads the store; the store knows nothing of it (roles are stored as
//!   names, [`Role`] orders them here).

mod caller;
mod resolver;
mod role;
#[cfg(test)]
mod tests;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

pub use caller::{forbidden, Caller, Readable, Scope, SelfReview, User};
pub use resolver::{Resolver, SESSION_TTL_MS};
pub use role::Role;

use crate::http_error::ApiError;

/// The middleware: resolves the request's caller (401 for invalid credentials) and hands
/// it on in the request's extensions.
pub async fn resolve(
    State(resolver): State<Resolver>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.extensions().get::<Caller>().is_none() {
        let caller = resolver.from_headers(request.headers()).await?;
        request.extensions_mut().insert(caller);
    }
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "route {} is not behind the caller middleware",
                parts.uri.path()
            ))
        })
    }
}

/// Brings a store from before users up to date, once at start-up, before any request:
/// tokens without a user get one ([`plue_store::Store::adopt_legacy_tokens`]) and
/// repositories without a read setting get `legacy_public` (the engine's `--private-reads`
/// as it was given). Each says so in the log, as a warning to look at.
pub async fn prepare(store: &plue_store::Store, legacy_public: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    for adopted in store
        .adopt_legacy_tokens()
        .await
        .context("giving tokens from before users a user")?
    {
        tracing::warn!(
            user = %adopted.user,
            tokens = adopted.tokens,
            "API tokens from before users now belong to user '{}', who holds maintainer on \
             every repository: review with `plue user list` and `plue member`",
            adopted.user
        );
    }
    let settled = store
        .settle_legacy_reads(legacy_public)
        .await
        .context("settling the read setting of repositories from before roles")?;
    if !settled.is_empty() {
        tracing::warn!(
            repositories = %settled.join(", "),
            public = legacy_public,
            "repositories from before roles keep {} reads until a maintainer changes them \
             (`plue repo set-public`)",
            if legacy_public { "public" } else { "private" }
        );
    }
    Ok(())
}
