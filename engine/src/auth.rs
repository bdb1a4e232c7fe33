//! Who may use the public API: bearer tokens — the admin token (`PLUE_ADMIN_TOKEN`) or
//! one made with `plue token create` (stored hashed) — checked by one middleware on every
//! `/api/...` route.
//!
//! Invariants: writes (any method but GET/HEAD) need a valid token whenever an admin token
//! is configured (`plue serve` always configures one); reads need one too when reads are
//! private. Tokens are compared as SHA-256 digests in constant time or looked up by hash;
//! a token never appears in a response or a log line.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::access::Resolver;
use crate::http_error::{ApiError, ApiResult};
use crate::store::Store;
use crate::tokens;

#[derive(Clone)]
pub struct Auth {
    admin_token: Option<Arc<String>>,
    private_reads: bool,
    store: Store,
    resolver: Resolver,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin_token", &self.admin_token.is_some())
            .field("private_reads", &self.private_reads)
            .finish()
    }
}

impl Auth {
    pub fn new(store: Store, admin_token: Option<String>, private_reads: bool) -> Auth {
        Auth {
            resolver: Resolver::new(store.clone(), admin_token.as_deref()),
            admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::new),
            private_reads,
            store,
        }
    }

    /// Resolves callers ([`crate::access`]) with the same admin token and store.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Whether tokens are checked at all (an admin token is configured).
    pub fn enforced(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Checks that the request carries the admin token itself (API tokens made with `plue
    /// token create` are not enough): for operations that reach the server's file system.
    /// No token at all is a 401, another token a 403. Passes when no admin token is
    /// configured (an embedded engine with no API users).
    pub fn check_admin(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(admin) = &self.admin_token else {
            return Ok(());
        };
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match tokens::bearer(header) {
            Some(given) if tokens::tokens_match(given, admin) => Ok(()),
            // regression: a read of an admin-only route (GET /api/runner-tokens, reads
            // open) without any token was a 403; schemathesis expects — as HTTP says — a
            // 401 for missing credentials.
            None => Err(ApiError::unauthorized(
                "this request needs 'Authorization: Bearer <token>' with the admin token",
            )),
            Some(_) => Err(ApiError::Client(
                axum::http::StatusCode::FORBIDDEN,
                "this needs the admin token".into(),
            )),
        }
    }

    /// Who the request's bearer token names: `admin` for the admin token, the name given at
    /// `plue token create` for an API token, `anonymous` when no admin token is configured
    /// (an embedded engine with no API users).
    pub async fn identity(&self, headers: &HeaderMap) -> ApiResult<String> {
        let Some(admin) = &self.admin_token else {
            return Ok("anonymous".into());
        };
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(given) = tokens::bearer(header) else {
            return Err(ApiError::unauthorized(
                "this request needs 'Authorization: Bearer <token>'",
            ));
        };
        if tokens::tokens_match(given, admin) {
            return Ok("admin".into());
        }
        let name = self
            .store
            .api_token_name(&tokens::hash_token(given))
            .await?;
        name.ok_or_else(|| ApiError::unauthorized("invalid token"))
    }

    /// Whom a bearer token belongs to, as the live-stream caps count people: the admin
    /// token and tokens the admin made (or `plue token create`) are their own owners; a
    /// token minted through `POST /api/tokens` with another API token belongs to that
    /// token's owner, so minting tokens never makes more owners. The owner is a token
    /// hash. Not a valid token: 401.
    pub async fn owner_of(&self, token: &str) -> ApiResult<String> {
        let hash = tokens::hash_token(token);
        if self
            .admin_token
            .as_ref()
            .is_some_and(|admin| tokens::tokens_match(token, admin))
        {
            return Ok(hash);
        }
        self.store
            .api_token_owner(&hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid token"))
    }

    /// The owner a token minted by this request's token gets: `None` (the new token owns
    /// itself) when the admin mints it or no admin token is configured, else the minting
    /// token's owner.
    pub async fn owner_for_minting(&self, headers: &HeaderMap) -> ApiResult<Option<String>> {
        if self.admin_token.is_none() || self.check_admin(headers).is_ok() {
            return Ok(None);
        }
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(given) = tokens::bearer(header) else {
            return Err(ApiError::unauthorized(
                "this request needs 'Authorization: Bearer <token>'",
            ));
        };
        Ok(Some(self.owner_of(given).await?))
    }

    /// Checks the request's bearer token.
    pub async fn check(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(admin) = &self.admin_token else {
            return Ok(());
        };
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(given) = tokens::bearer(header) else {
            return Err(ApiError::unauthorized(
                "this request needs 'Authorization: Bearer <token>'",
            ));
        };
        if tokens::tokens_match(given, admin)
            || self
                .store
                .api_token_exists(&tokens::hash_token(given))
                .await?
        {
            Ok(())
        } else {
            Err(ApiError::unauthorized("invalid token"))
        }
    }
}

/// The middleware: writes always need a token, reads when they are private.
pub async fn require_token(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !read || auth.private_reads {
        auth.check(request.headers()).await?;
    }
    Ok(next.run(request).await)
}
