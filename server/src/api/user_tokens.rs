//! `/api/tokens` and `/api/users/{name}/tokens`: API tokens of users — made (shown once),
//! listed (never the token), revoked.
//!
//! Invariants:
//! - A token is made for the caller's own user, or by an installation admin for another
//!   user; never by anyone else for anyone else.
//! - A token is never wider than what made it: its `max_role` and `repos` only narrow its
//!   user's rights, and a token made with a narrowed (or expiring) token inherits that
//!   narrowing (and expiry) at least — asking for more is refused, not silently cut.
//! - Revoking ends the dashboard sessions the token opened and the tokens made with it
//!   (the store does it all at once), so a stolen token's holder keeps nothing it minted;
//!   only the token's owner or an admin revokes it, and others learn nothing of it. A
//!   narrowed token (a `max_role` or `repos`) revokes only itself and the tokens made with
//!   it: a token handed to a service for one repository cannot end its user's others.
//! - Tokens are stored hashed; the value is in the creating response only.
//!
//! Why one file past ~600 lines: making, listing and revoking tokens share the narrowing
//! rules (a token never makes a stronger one).

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use plue_store::{now_ms, NewToken, Store, TokenRow, UserRow};
use plue_vault::tokens;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::people::user_named;
use super::views::ErrorView;
use super::{audit_installation, parse_positive_id, ApiState};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// The longest a token may live, in days.
const MAX_DAYS: u32 = 3650;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    /// What the token is for: 1 to 100 characters, not blank, no control, bidi, invisible
    /// (format) or line-separator characters. A label only: no rule reads it.
    #[schema(schema_with = super::rules::token_name)]
    name: String,
    /// The highest role it acts with (default: its user's own, or what the token making
    /// it is narrowed to).
    #[serde(default)]
    max_role: Option<Role>,
    /// The only repositories (`owner/name`) it may act on (default: all of its user's, or
    /// those the token making it is narrowed to).
    #[serde(default)]
    #[schema(min_items = 1)]
    repos: Option<Vec<String>>,
    /// It stops working after this many days (1 to 3650; default: never, or when the token
    /// making it expires).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenView {
    pub id: i64,
    /// Its user's name.
    pub user: String,
    pub name: String,
    /// The highest role it acts with (none: its user's own).
    #[schema(required = true)]
    pub max_role: Option<String>,
    /// The only repositories it acts on (none: all of its user's).
    #[schema(required = true)]
    pub repos: Option<Vec<String>>,
    pub created_at: i64,
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    #[schema(required = true)]
    pub revoked_at: Option<i64>,
    #[schema(required = true)]
    pub last_used_at: Option<i64>,
}

impl TokenView {
    fn new(row: TokenRow, user: &str) -> TokenView {
        TokenView {
            id: row.id,
            user: user.to_string(),
            name: row.name,
            max_role: row.max_role,
            repos: row
                .repos
                .as_deref()
                .map(|json| serde_json::from_str(json).unwrap_or_default()),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A new API token: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserTokenCreated {
    #[serde(flatten)]
    pub listed: TokenView,
    /// Shown once; only its hash is stored.
    pub token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TokensQuery {
    /// Another user's tokens (admins only; default: the caller's own).
    #[param(example = "alice")]
    user: Option<String>,
}

/// A token's `{id}` in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: the handler parses the id itself (400 when it is none)
pub(super) struct TokenPath {
    /// The token's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
}

/// A user's name in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: the handler takes the segment as a string
pub(super) struct TokenUserPath {
    /// The user's name (any case).
    #[param(example = "release-bot")]
    name: String,
}

/// What a new token may do, from what the request asks and what makes it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Narrowing {
    max_role: Option<Role>,
    /// Repository names, sorted.
    repos: Option<Vec<String>>,
    expires_at: Option<i64>,
}

/// The narrowing of the token this request came with (nothing for the admin token or a
/// caller acting with its user's full rights).
async fn caller_narrowing(store: &Store, caller: &Caller) -> ApiResult<Narrowing> {
    let Caller::Signed {
        scope, token_id, ..
    } = caller
    else {
        return Ok(Narrowing::default());
    };
    let repos = match &scope.repos {
        None => None,
        Some(ids) => {
            let mut names = Vec::new();
            for id in ids {
                if let Some(repo) = store.repo_by_id(*id).await? {
                    names.push(repo.name);
                }
            }
            names.sort();
            Some(names)
        }
    };
    let expires_at = match token_id {
        Some(id) => store.token_by_id(*id).await?.and_then(|t| t.expires_at),
        None => None,
    };
    Ok(Narrowing {
        max_role: scope.max_role,
        repos,
        expires_at,
    })
}

/// Checks what `request` asks against `outer` (what the caller's token is narrowed to) and
/// returns the new token's narrowing: at most `outer`, 403 when it asks for more.
async fn narrowing(
    store: &Store,
    caller: &Caller,
    request: &CreateToken,
    outer: Narrowing,
) -> ApiResult<Narrowing> {
    let max_role = match (request.max_role, outer.max_role) {
        (Some(asked), Some(max)) if asked > max => {
            return Err(ApiError::forbidden(format!(
                "this token acts as at most {max}; it cannot make a token acting as {asked}"
            )))
        }
        (Some(asked), _) => Some(asked),
        (None, max) => max,
    };
    let repos = match &request.repos {
        None => outer.repos,
        Some(asked) => {
            if asked.is_empty() {
                return Err(ApiError::bad_request(
                    "repos, when given, names at least one repository (owner/name)",
                ));
            }
            let mut names = BTreeSet::new();
            for name in asked {
                super::repos::check_repo_name(name)?;
                // The caller must see it: a token naming unknown or hidden repositories
                // would say nothing useful, and its answer would tell which exist.
                let repo = caller.visible_repo(store, name, Role::Reader).await?;
                if outer
                    .repos
                    .as_ref()
                    .is_some_and(|only| !only.contains(&repo.name))
                {
                    return Err(ApiError::forbidden(format!(
                        "this token may not act on {}; it cannot make a token that does",
                        repo.name
                    )));
                }
                names.insert(repo.name);
            }
            Some(names.into_iter().collect())
        }
    };
    let asked_expiry = match request.expires_in_days {
        None => None,
        Some(days) if (1..=MAX_DAYS).contains(&days) => Some(now_ms() + i64::from(days) * DAY_MS),
        Some(days) => {
            return Err(ApiError::bad_request(format!(
                "expires_in_days is {days}; it must be 1 to {MAX_DAYS}"
            )))
        }
    };
    let expires_at = match (asked_expiry, outer.expires_at) {
        (Some(asked), Some(outer)) => Some(asked.min(outer)),
        (asked, outer) => asked.or(outer),
    };
    Ok(Narrowing {
        max_role,
        repos,
        expires_at,
    })
}

fn check_token_name(name: &str) -> ApiResult<&str> {
    // As the document says it (`maxLength`, and the pattern over the whole name): the
    // length and the characters of the name as sent; then it is kept trimmed.
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "a token needs a name of 1 to 100 characters",
        ));
    }
    // regression: bidi overrides passed (only controls were refused), so a name could
    // display as another.
    evaluator::text::check_clean_field("name", name, evaluator::text::TextKind::UserLine)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name.trim())
}

/// Stores a token of `user` with `narrowing` (made with the caller's token `maker`, which
/// it then lives no longer than: `None` for the admin's route), records it, and answers it.
async fn mint(
    store: &Store,
    caller: &Caller,
    user: &UserRow,
    name: &str,
    narrowing: Narrowing,
    maker: Option<i64>,
) -> ApiResult<(StatusCode, Json<UserTokenCreated>)> {
    let token = tokens::new_token()?;
    let max_role = narrowing.max_role.map(Role::as_str);
    let repos = narrowing
        .repos
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(anyhow::Error::from)?;
    let new = NewToken {
        user_id: user.id,
        name,
        token_hash: &tokens::hash_token(&token),
        max_role,
        repos: repos.as_deref(),
        expires_at: narrowing.expires_at,
    };
    let id = match maker {
        None => store.create_user_token(&new).await?,
        Some(maker) => store
            .create_user_token_minted_by(&new, maker)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked token"))?,
    };
    audit_installation(
        store,
        caller,
        "token.create",
        serde_json::json!({
            "token": id,
            "user": user.name,
            "name": name,
            "max_role": max_role,
            "repos": narrowing.repos,
            "expires_at": narrowing.expires_at,
        }),
    )
    .await?;
    let row = store
        .token_by_id(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("token {id} vanished after it was made"))?;
    Ok((
        StatusCode::CREATED,
        Json(UserTokenCreated {
            listed: TokenView::new(row, &user.name),
            token,
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    operation_id = "create_token",
    summary = "Make an API token for the caller's own user",
    description = "The token acts with at most the caller's rights: `max_role` and `repos` \
                   only narrow them, and a token made with a narrowed or expiring token is \
                   narrowed and expires at least as much.",
    request_body = CreateToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The token, shown this once", body = UserTokenCreated),
        (status = 400, description = "A malformed body, an invalid name, repository or expiry, or an engine without users", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "It would be wider than the token making it", body = ErrorView),
        (status = 404, description = "A repository that does not exist or the caller may not read", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateToken>, ApiError>,
) -> ApiResult<(StatusCode, Json<UserTokenCreated>)> {
    let user_id = caller.require_user()?.id;
    let Object(request) = body?;
    let name = check_token_name(&request.name)?;
    let store = state.executor.store();
    let user = store
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the caller's user {user_id} is missing"))?;
    let outer = caller_narrowing(store, &caller).await?;
    let narrowing = narrowing(store, &caller, &request, outer).await?;
    mint(store, &caller, &user, name, narrowing, caller.token_id()).await
}

#[utoipa::path(
    post,
    path = "/api/users/{name}/tokens",
    tag = "tokens",
    operation_id = "create_user_token",
    summary = "Make an API token for a user or bot (admins only)",
    params(TokenUserPath),
    request_body = CreateToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The token, shown this once", body = UserTokenCreated),
        (status = 400, description = "A malformed body, an invalid name, repository or expiry", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such user, or no such repository", body = ErrorView),
        (status = 409, description = "The user is disabled", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create_user_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user): Path<String>,
    body: Result<Object<CreateToken>, ApiError>,
) -> ApiResult<(StatusCode, Json<UserTokenCreated>)> {
    caller.require_admin()?;
    let store = state.executor.store();
    let user = user_named(store, &user).await?;
    if user.disabled_at.is_some() {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!(
                "user '{}' is disabled: its tokens would not work",
                user.name
            ),
        ));
    }
    let Object(request) = body?;
    let name = check_token_name(&request.name)?;
    // An admin acts with its full rights here (a narrowed token of one is no admin).
    let narrowing = narrowing(store, &caller, &request, Narrowing::default()).await?;
    mint(store, &caller, &user, name, narrowing, None).await
}

#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    summary = "The caller's API tokens (never the tokens), revoked ones included",
    description = "A narrowed token lists only itself and the tokens made with it.",
    params(TokensQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tokens, newest first", body = Vec<TokenView>),
        (status = 400, description = "An unknown query parameter, or an engine without users", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Another user's tokens, and not an installation admin", body = ErrorView),
        (status = 404, description = "No such user", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_tokens(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.executor.store();
    let user = match query.user {
        Some(name)
            if caller
                .user()
                .is_none_or(|me| !me.name.eq_ignore_ascii_case(&name)) =>
        {
            caller.require_admin()?;
            user_named(store, &name).await?
        }
        _ => {
            let id = caller.require_user()?.id;
            store
                .user_by_id(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the caller's user {id} is missing"))?
        }
    };
    let mut rows = store.list_tokens(Some(user.id)).await?;
    // A narrowed token lists only itself and the tokens made with it: the others' names
    // and repositories are outside what it may read.
    if let Some(mine) = caller.narrowed_token_id().filter(|_| !caller.is_admin()) {
        let mut kept = Vec::new();
        for row in rows {
            if row.id == mine || store.token_made_by(row.id, mine).await? {
                kept.push(row);
            }
        }
        rows = kept;
    }
    Ok(Json(
        rows.into_iter()
            .map(|row| TokenView::new(row, &user.name))
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    operation_id = "revoke_token",
    summary = "Revoke an API token: it, the tokens made with it and the dashboard sessions they opened stop working",
    description = "Its owner or an installation admin.",
    params(TokenPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The revoked token", body = TokenView),
        (status = 400, description = "The id is not a token id", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "A narrowed token, and neither it nor made with it", body = ErrorView),
        (status = 404, description = "No such token of the caller's", body = ErrorView),
        (status = 409, description = "Revoked already", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    caller.require_signed_in()?;
    let id = parse_positive_id(&id, "token id")?;
    let store = state.executor.store();
    let hidden = || ApiError::not_found(format!("no token {id}"));
    let token = store.token_by_id(id).await?.ok_or_else(hidden)?;
    if !caller.is_admin() && caller.user_id() != Some(token.user_id) {
        return Err(hidden());
    }
    // regression: a token narrowed to reading one repository revoked its user's other
    // tokens (an admin's included).
    if let Some(mine) = caller.narrowed_token_id() {
        if mine != id && !store.token_made_by(id, mine).await? {
            return Err(crate::access::forbidden(format!(
                "this token is narrowed: it revokes only itself and the tokens made with it, \
                 not token {id}"
            )));
        }
    }
    if !store.revoke_token(id).await? {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("token {id} is revoked already"),
        ));
    }
    let owner = store
        .user_by_id(token.user_id)
        .await?
        .map(|u| u.name)
        .unwrap_or_default();
    audit_installation(
        store,
        &caller,
        "token.revoke",
        serde_json::json!({ "token": id, "user": owner, "name": token.name }),
    )
    .await?;
    let row = store.token_by_id(id).await?.unwrap_or(token);
    Ok(Json(TokenView::new(row, &owner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_role: Option<Role>, expires_in_days: Option<u32>) -> CreateToken {
        CreateToken {
            name: "t".into(),
            max_role,
            repos: None,
            expires_in_days,
        }
    }

    #[tokio::test]
    async fn a_narrowed_token_makes_tokens_no_wider_than_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let caller = Caller::Embedded;
        // One expiry for every copy: two reads of the clock may be a millisecond apart.
        let expires_at = now_ms() + DAY_MS;
        let outer = || Narrowing {
            max_role: Some(Role::Writer),
            repos: Some(vec!["octo/hello".into()]),
            expires_at: Some(expires_at),
        };
        // Nothing asked: the outer narrowing, all of it.
        let inherited = narrowing(&store, &caller, &request(None, None), outer())
            .await
            .unwrap();
        assert_eq!(inherited, outer());
        // Narrower: granted.
        let narrower = narrowing(
            &store,
            &caller,
            &request(Some(Role::Reader), Some(30)),
            outer(),
        )
        .await
        .unwrap();
        assert_eq!(narrower.max_role, Some(Role::Reader));
        assert_eq!(narrower.expires_at, outer().expires_at, "never outlives it");
        // Wider: refused.
        let wider = narrowing(
            &store,
            &caller,
            &request(Some(Role::Maintainer), None),
            outer(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&wider, ApiError::Client(StatusCode::FORBIDDEN, m) if m.contains("at most writer")),
            "{wider:?}"
        );
        // An expiry out of range.
        assert!(matches!(
            narrowing(&store, &caller, &request(None, Some(0)), outer()).await,
            Err(ApiError::Client(StatusCode::BAD_REQUEST, _))
        ));
    }
}
