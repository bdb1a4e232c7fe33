//! Callers from credentials: the [`Resolver`] turns a bearer token (the admin token, or a
//! user's token with its narrowing) or a dashboard session into a [`Caller`], once per
//! request, and opens and closes sessions.
//!
//! Invariants: a token is compared by its SHA-256 in constant time, and a session stores
//! only hashes (its id's and the token's that opened it); a session lives while the token
//! that opened it is valid and names the same user — revoked, expired or narrowed, the
//! session follows the token.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::HeaderMap;
use plue_store::{now_ms, Store, UserRow};
use plue_vault::tokens;

use super::caller::{Caller, Scope, User};
use super::role::Role;
use crate::http_error::{ApiError, ApiResult};

/// Resolves callers from credentials.
#[derive(Clone)]
pub struct Resolver {
    store: Store,
    /// SHA-256 of the admin token, when one is configured.
    admin_hash: Option<Arc<String>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("enforced", &self.admin_hash.is_some())
            .finish()
    }
}

/// How long a dashboard session lives.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

impl Resolver {
    pub fn new(store: Store, admin_token: Option<&str>) -> Resolver {
        Resolver {
            store,
            admin_hash: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new(tokens::hash_token(t))),
        }
    }

    /// Whether the engine has users at all (an admin token is configured).
    pub fn enforced(&self) -> bool {
        self.admin_hash.is_some()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The caller an `Authorization` header names: no header is anonymous (embedded on an
    /// engine without users), an invalid token a 401.
    pub async fn from_headers(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        if !self.enforced() {
            return Ok(Caller::Embedded);
        }
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("?"));
        match header {
            None => Ok(Caller::Anonymous),
            Some(header) => match tokens::bearer(Some(header)) {
                Some(token) => self
                    .resolve_token_hash(&tokens::hash_token(token))
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked token")),
                None => Err(ApiError::unauthorized(
                    "the Authorization header must be 'Bearer <token>'",
                )),
            },
        }
    }

    /// The caller a token (by its hash) acts as, if it is valid now.
    async fn resolve_token_hash(&self, hash: &str) -> anyhow::Result<Option<Caller>> {
        if self
            .admin_hash
            .as_ref()
            .is_some_and(|admin| tokens::tokens_match(hash, admin))
        {
            let Some(user) = self.store.user_by_name("admin").await? else {
                anyhow::bail!("the admin user is missing from the store");
            };
            return Ok(Some(Caller::Signed {
                user: user_of(user, true),
                scope: Scope::default(),
                token_id: None,
            }));
        }
        let Some(valid) = self.store.token_by_hash(hash, now_ms()).await? else {
            return Ok(None);
        };
        // A role this engine does not know narrows to reading.
        let max_role = valid
            .token
            .max_role
            .as_deref()
            .map(|name| Role::parse(name).unwrap_or(Role::Reader));
        let repos = match valid.token.repos.as_deref() {
            None => None,
            Some(json) => {
                let names: Vec<String> = serde_json::from_str(json).unwrap_or_default();
                let mut ids = BTreeSet::new();
                for name in names {
                    if let Some(repo) = self.store.repo_by_name(&name).await? {
                        ids.insert(repo.id);
                    }
                }
                Some(ids)
            }
        };
        let scope = Scope {
            max_role,
            repos,
            admin_user: valid.user.admin,
        };
        let admin = valid.user.admin && !scope.narrows();
        Ok(Some(Caller::Signed {
            user: user_of(valid.user, admin),
            scope,
            token_id: Some(valid.token.id),
        }))
    }

    /// Opens a dashboard session with `token`: the session's id (for the cookie, never the
    /// token) and who it is. `None`: the token is not valid.
    pub async fn open_session(&self, token: &str) -> anyhow::Result<Option<(String, Caller)>> {
        if !self.enforced() {
            return Ok(None);
        }
        let hash = tokens::hash_token(token);
        let Some(caller) = self.resolve_token_hash(&hash).await? else {
            return Ok(None);
        };
        let user_id = caller.user_id().expect("a token names a user");
        let id = tokens::new_token()?;
        self.store
            .create_session(
                &tokens::hash_token(&id),
                user_id,
                &hash,
                now_ms() + SESSION_TTL_MS,
            )
            .await?;
        Ok(Some((id, caller)))
    }

    /// Who a dashboard session is, while it and the token that opened it are valid.
    pub async fn from_session(&self, id: &str) -> anyhow::Result<Option<Caller>> {
        if !self.enforced() {
            return Ok(Some(Caller::Embedded));
        }
        let Some((user, token_hash)) = self
            .store
            .session(&tokens::hash_token(id), now_ms())
            .await?
        else {
            return Ok(None);
        };
        // The token decides: revoked, expired, narrowed — the session follows it.
        match self.resolve_token_hash(&token_hash).await? {
            Some(caller) if caller.user_id() == Some(user.id) => Ok(Some(caller)),
            _ => Ok(None),
        }
    }

    /// Ends a dashboard session.
    pub async fn close_session(&self, id: &str) -> anyhow::Result<()> {
        self.store.delete_session(&tokens::hash_token(id)).await
    }
}

fn user_of(row: UserRow, admin: bool) -> User {
    User {
        id: row.id,
        name: row.name,
        admin,
        kind: row.kind.to_string(),
    }
}
