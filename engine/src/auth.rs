//! What the dashboard still asks of bearer tokens until it resolves a
//! [`crate::access::Caller`] like the API: whether tokens are checked at all, whether one
//! is valid, and whom a token belongs to (for the live-stream caps). The API itself asks
//! only [`crate::access`]: every `/api` handler takes the [`crate::access::Caller`] the
//! middleware resolved and checks its own rule.
//!
//! Invariants: tokens are compared as SHA-256 digests in constant time or looked up by
//! hash; a token never appears in a response or a log line.

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::access::Resolver;
use crate::http_error::{ApiError, ApiResult};
use crate::store::Store;
use crate::tokens;

#[derive(Clone)]
pub struct Auth {
    admin_token: Option<Arc<String>>,
    store: Store,
    resolver: Resolver,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin_token", &self.admin_token.is_some())
            .finish()
    }
}

impl Auth {
    /// `_private_reads` is no longer read: reads are per repository
    /// (`repositories.public_read`, settled from `--private-reads` once at start-up by
    /// [`crate::access::prepare`]).
    pub fn new(store: Store, admin_token: Option<String>, _private_reads: bool) -> Auth {
        Auth {
            resolver: Resolver::new(store.clone(), admin_token.as_deref()),
            admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::new),
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

    fn is_admin_token(&self, token: &str) -> bool {
        self.admin_token
            .as_ref()
            .is_some_and(|admin| tokens::tokens_match(token, admin))
    }

    /// Whom a bearer token belongs to, as the dashboard's live-stream caps count people:
    /// the admin token and tokens the admin made are their own owners; a token minted
    /// through `POST /api/tokens` with another API token belongs to that token's owner. The
    /// owner is a token hash. Not a valid token: 401.
    pub async fn owner_of(&self, token: &str) -> ApiResult<String> {
        let hash = tokens::hash_token(token);
        if self.is_admin_token(token) {
            return Ok(hash);
        }
        self.store
            .api_token_owner(&hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid token"))
    }

    /// Checks the request's bearer token (the dashboard's sign-in).
    pub async fn check(&self, headers: &HeaderMap) -> ApiResult<()> {
        if self.admin_token.is_none() {
            return Ok(());
        }
        let Some(given) = bearer_of(headers) else {
            return Err(ApiError::unauthorized(
                "this request needs 'Authorization: Bearer <token>'",
            ));
        };
        if self.is_admin_token(given)
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

fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    tokens::bearer(
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}
