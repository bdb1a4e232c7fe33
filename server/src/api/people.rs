//! `/api/user`, `/api/users/...` and `/api/groups/...`: who the caller is, and the
//! installation's users, their forge logins and groups.
//!
//! Invariants:
//! - Only an installation admin (not a narrowed token of one) creates, disables or links
//!   users and manages groups; a user reads itself, and no one else learns whether another
//!   user exists (the same 404 as for no such user).
//! - Names follow [`plue_store::valid_name`] and are unique case-insensitively among
//!   users (the store's `name_key`); `admin` in any case is the installation's own user.
//! - The `admin` user is never disabled: `PLUE_ADMIN_TOKEN` signs in as it.
//! - Every change is recorded in the audit trail, with who made it.
//!
//! Why one file past ~600 lines: the users, logins and groups routes share one set of role
//! checks and views; each handler is short.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plue_store::{valid_name, NameError, NewUser, Store, UserRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::ErrorView;
use super::{audit_installation, ApiState};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// The name of the installation's own admin user.
const ADMIN_USER: &str = "admin";

/// A person or a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum UserKind {
    Person,
    Bot,
}

impl UserKind {
    fn as_str(self) -> &'static str {
        self.stored().as_str()
    }

    /// The store's kind (the API's is its own type, for its schema).
    fn stored(self) -> plue_store::UserKind {
        match self {
            UserKind::Person => plue_store::UserKind::Person,
            UserKind::Bot => plue_store::UserKind::Bot,
        }
    }
}

/// A forge whose logins can be linked to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum ForgeName {
    Github,
    Gitea,
}

impl ForgeName {
    fn as_str(self) -> &'static str {
        match self {
            ForgeName::Github => "github",
            ForgeName::Gitea => "gitea",
        }
    }

    fn parse(raw: &str) -> ApiResult<ForgeName> {
        match raw {
            "github" => Ok(ForgeName::Github),
            "gitea" => Ok(ForgeName::Gitea),
            other => Err(ApiError::bad_request(format!(
                "'{other}' is not a forge (expected github or gitea)"
            ))),
        }
    }
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserView {
    pub id: i64,
    pub name: String,
    /// `person` or `bot`.
    pub kind: String,
    /// An installation admin.
    pub admin: bool,
    pub created_at: i64,
    /// When it was disabled (none of its tokens works since).
    #[schema(required = true)]
    pub disabled_at: Option<i64>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> UserView {
        UserView {
            id: row.id,
            name: row.name,
            kind: row.kind.to_string(),
            admin: row.admin,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
        }
    }
}

/// A forge login linked to a user.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ForgeLoginView {
    /// `github` or `gitea`.
    pub forge: String,
    pub login: String,
}

/// A role on a repository.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RepoRoleView {
    /// `owner/name`.
    pub repository: String,
    pub role: Role,
}

/// The caller: its user, the roles it acts with and its forge logins.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MeView {
    pub id: i64,
    pub name: String,
    /// `person` or `bot`.
    pub kind: String,
    /// Acts as an installation admin (a narrowed token of an admin does not).
    pub admin: bool,
    /// The roles this request acts with, per repository (narrowed by its token).
    pub roles: Vec<RepoRoleView>,
    pub forge_logins: Vec<ForgeLoginView>,
    /// The API token this request came with (none: the admin token or a session of it).
    #[schema(required = true)]
    pub token_id: Option<i64>,
}

/// A user and its forge logins.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserDetailView {
    #[serde(flatten)]
    pub user: UserView,
    pub forge_logins: Vec<ForgeLoginView>,
    /// Its roles, per repository (as held, not as any one token narrows them).
    pub roles: Vec<RepoRoleView>,
}

/// A group and its members.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct GroupView {
    pub name: String,
    pub created_at: i64,
    /// The members' user names.
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateUser {
    /// 1 to 39 ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit;
    /// unique in any case; not `admin`.
    #[schema(example = "alice", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,38}$")]
    name: String,
    kind: UserKind,
    /// An installation admin (default false).
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkForgeLogin {
    forge: ForgeName,
    /// The login as the forge spells it (matched in any case).
    #[schema(example = "octocat", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,38}$")]
    login: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateGroup {
    /// As user names; reviewer and approver lists name it `@name`.
    #[schema(example = "release", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,38}$")]
    name: String,
}

/// A user's name in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segment as a string
pub(super) struct UserPath {
    /// The user's name (any case).
    #[param(example = "alice")]
    name: String,
}

/// A user's forge login in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct ForgeLoginPath {
    /// The user's name (any case).
    #[param(example = "alice")]
    name: String,
    /// `github` or `gitea`.
    #[param(value_type = ForgeName, example = "github")]
    forge: String,
    /// The forge login (any case).
    #[param(example = "octocat")]
    login: String,
}

/// A group's name in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segment as a string
pub(super) struct GroupPath {
    /// The group's name (any case).
    #[param(example = "release")]
    name: String,
}

/// A group and a user in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct MemberPath {
    /// The group's name (any case).
    #[param(example = "release")]
    name: String,
    /// The user's name (any case).
    #[param(example = "alice")]
    user: String,
}

fn no_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user '{name}'"))
}

fn no_group(name: &str) -> ApiError {
    ApiError::not_found(format!("no group '{name}'"))
}

/// Checks a new user's or group's name: a valid name, not the admin's.
fn check_new_name(what: &str, name: &str) -> ApiResult<()> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "'{name}' is not a valid {what} name: 1 to 39 ASCII letters, digits, '.', '_' \
             and '-', starting with a letter or digit"
        )));
    }
    if name.eq_ignore_ascii_case(ADMIN_USER) {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("the name '{name}' is reserved for the installation's admin"),
        ));
    }
    Ok(())
}

fn taken(error: NameError, what: &str) -> ApiError {
    match error {
        NameError::Taken(name) => ApiError::Client(
            StatusCode::CONFLICT,
            format!("a {what} named '{name}' exists already (names are unique in any case)"),
        ),
        NameError::Store(e) => ApiError::Internal(e),
    }
}

/// The user `name`, or 404 `no user '{name}'`.
pub(super) async fn user_named(store: &Store, name: &str) -> ApiResult<UserRow> {
    store.user_by_name(name).await?.ok_or_else(|| no_user(name))
}

/// The user `name`, for an admin (404 when there is none).
async fn user_for_admin(store: &Store, caller: &Caller, name: &str) -> ApiResult<UserRow> {
    caller.require_admin()?;
    user_named(store, name).await
}

async fn forge_logins(store: &Store, user_id: i64) -> ApiResult<Vec<ForgeLoginView>> {
    Ok(store
        .forge_logins_of(user_id)
        .await?
        .into_iter()
        .map(|row| ForgeLoginView {
            forge: row.forge,
            login: row.login,
        })
        .collect())
}

/// The roles the caller acts with, as its token narrows them (a token narrowed to one
/// repository names no other).
async fn caller_roles(store: &Store, caller: &Caller) -> ApiResult<Vec<RepoRoleView>> {
    let mut roles = Vec::new();
    for repo in store.list_repos().await? {
        if let Some(role) = caller.role_on(store, repo.id).await? {
            roles.push(RepoRoleView {
                repository: repo.name,
                role,
            });
        }
    }
    roles.sort_by(|a, b| a.repository.cmp(&b.repository));
    Ok(roles)
}

async fn held_roles(store: &Store, user_id: i64) -> ApiResult<Vec<RepoRoleView>> {
    let mut roles = Vec::new();
    for (repo_id, role) in store.roles_of_user(user_id).await? {
        let (Some(role), Some(repo)) = (Role::parse(&role), store.repo_by_id(repo_id).await?)
        else {
            continue;
        };
        roles.push(RepoRoleView {
            repository: repo.name,
            role,
        });
    }
    roles.sort_by(|a, b| a.repository.cmp(&b.repository));
    Ok(roles)
}

#[utoipa::path(
    get,
    path = "/api/user",
    tag = "users",
    operation_id = "current_user",
    summary = "Who the caller is: its user, its roles and forge logins",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeView),
        (status = 400, description = "This engine has no users (no admin token)", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn current_user(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<MeView>> {
    let store = state.executor.store();
    let user = caller.require_user()?.clone();
    let roles = caller_roles(store, &caller).await?;
    let token_id = caller.token_id();
    Ok(Json(MeView {
        id: user.id,
        forge_logins: forge_logins(store, user.id).await?,
        name: user.name,
        kind: user.kind,
        admin: user.admin,
        roles,
        token_id,
    }))
}

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    operation_id = "list_users",
    summary = "Every user, by name (admins only)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The users, disabled ones included", body = Vec<UserView>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_users(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserView>>> {
    caller.require_admin()?;
    let users = state.executor.store().list_users().await?;
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    operation_id = "create_user",
    summary = "Create a user: a person or a bot (admins only)",
    description = "The user holds no role until a maintainer grants one; give it a token \
                   with POST /api/users/{name}/tokens.",
    request_body = CreateUser,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 400, description = "A malformed body or an invalid name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 409, description = "The name is taken in some case, or is `admin`", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create_user(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateUser>, ApiError>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    caller.require_admin()?;
    let Object(request) = body?;
    check_new_name("user", &request.name)?;
    let store = state.executor.store();
    let id = store
        .create_user(&NewUser {
            name: &request.name,
            kind: request.kind.stored(),
            admin: request.admin,
        })
        .await
        .map_err(|e| taken(e, "user"))?;
    audit_installation(
        store,
        &caller,
        "user.create",
        serde_json::json!({
            "user": request.name,
            "kind": request.kind.as_str(),
            "admin": request.admin,
        }),
    )
    .await?;
    let user = store
        .user_by_id(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user {id} vanished after it was created"))?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(
    get,
    path = "/api/users/{name}",
    tag = "users",
    operation_id = "get_user",
    summary = "One user, its forge logins and roles (admins, and the user itself)",
    params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserDetailView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, description = "No such user, or not the caller's to read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserDetailView>> {
    caller.require_signed_in()?;
    let store = state.executor.store();
    let found = store.user_by_name(&name).await?;
    let user = match found {
        Some(user) if caller.is_admin() || caller.user_id() == Some(user.id) => user,
        _ => return Err(no_user(&name)),
    };
    // regression: a token narrowed to one repository read the names of every private
    // repository its user holds a role on here.
    let roles = match caller.is_admin() {
        true => held_roles(store, user.id).await?,
        false => caller_roles(store, &caller).await?,
    };
    Ok(Json(UserDetailView {
        forge_logins: forge_logins(store, user.id).await?,
        roles,
        user: user.into(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/users/{name}",
    tag = "users",
    operation_id = "disable_user",
    summary = "Disable a user: its tokens and sessions stop working (admins only)",
    description = "The user keeps its id, so its runs, decisions and audit events still \
                   name it. The `admin` user cannot be disabled.",
    params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The disabled user", body = UserView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such user", body = ErrorView),
        (status = 409, description = "The `admin` user, or a user disabled already", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn disable_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    let store = state.executor.store();
    let user = user_for_admin(store, &caller, &name).await?;
    if user.name.eq_ignore_ascii_case(ADMIN_USER) {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            "the 'admin' user cannot be disabled: PLUE_ADMIN_TOKEN signs in as it (change \
             the token instead)"
                .into(),
        ));
    }
    if !store.disable_user(user.id).await? {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("user '{}' is disabled already", user.name),
        ));
    }
    audit_installation(
        store,
        &caller,
        "user.disable",
        serde_json::json!({ "user": user.name }),
    )
    .await?;
    let user = store.user_by_id(user.id).await?.unwrap_or(user);
    Ok(Json(user.into()))
}

#[utoipa::path(
    post,
    path = "/api/users/{name}/forge-logins",
    tag = "users",
    operation_id = "link_forge_login",
    summary = "Link a forge login to a user (admins only)",
    description = "Runs that login's pushes and pull requests start count as the user's: \
                   with exclude_triggerer it may not decide their gates.",
    params(UserPath),
    request_body = LinkForgeLogin,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The linked login", body = ForgeLoginView),
        (status = 400, description = "A malformed body or an invalid login", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such user", body = ErrorView),
        (status = 409, description = "The login is linked already (to this or another user)", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn link_forge_login(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Object<LinkForgeLogin>, ApiError>,
) -> ApiResult<(StatusCode, Json<ForgeLoginView>)> {
    let store = state.executor.store();
    let user = user_for_admin(store, &caller, &name).await?;
    let Object(request) = body?;
    if !valid_name(&request.login) {
        return Err(ApiError::bad_request(format!(
            "'{}' is not a forge login: 1 to 39 ASCII letters, digits, '.', '_' and '-'",
            request.login
        )));
    }
    let forge = request.forge.as_str();
    store
        .link_forge_login(user.id, forge, &request.login)
        .await
        .map_err(|e| match e {
            NameError::Taken(login) => ApiError::Client(
                StatusCode::CONFLICT,
                format!("the forge login {login} is linked to a user already"),
            ),
            NameError::Store(e) => ApiError::Internal(e),
        })?;
    audit_installation(
        store,
        &caller,
        "user.link",
        serde_json::json!({ "user": user.name, "forge": forge, "login": request.login }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ForgeLoginView {
            forge: forge.to_string(),
            login: request.login,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/users/{name}/forge-logins/{forge}/{login}",
    tag = "users",
    operation_id = "unlink_forge_login",
    summary = "Unlink a forge login from a user (admins only)",
    params(ForgeLoginPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The unlinked login", body = ForgeLoginView),
        (status = 400, description = "Not a forge", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such user, or the login is not linked to it", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn unlink_forge_login(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, forge, login)): Path<(String, String, String)>,
) -> ApiResult<Json<ForgeLoginView>> {
    let store = state.executor.store();
    let user = user_for_admin(store, &caller, &name).await?;
    let forge = ForgeName::parse(&forge)?.as_str();
    if !store.unlink_forge_login(user.id, forge, &login).await? {
        return Err(ApiError::not_found(format!(
            "{forge}:{login} is not linked to '{}'",
            user.name
        )));
    }
    audit_installation(
        store,
        &caller,
        "user.unlink",
        serde_json::json!({ "user": user.name, "forge": forge, "login": login }),
    )
    .await?;
    Ok(Json(ForgeLoginView {
        forge: forge.to_string(),
        login,
    }))
}

async fn group_view(store: &Store, group: plue_store::GroupRow) -> ApiResult<GroupView> {
    Ok(GroupView {
        members: store
            .group_members(group.id)
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect(),
        name: group.name,
        created_at: group.created_at,
    })
}

async fn group_for_admin(
    store: &Store,
    caller: &Caller,
    name: &str,
) -> ApiResult<plue_store::GroupRow> {
    caller.require_admin()?;
    store
        .group_by_name(name)
        .await?
        .ok_or_else(|| no_group(name))
}

/// The group `name` and the user `user`, for an admin changing its members (404 for
/// either missing).
async fn group_and_member(
    store: &Store,
    caller: &Caller,
    name: &str,
    user: &str,
) -> ApiResult<(plue_store::GroupRow, UserRow)> {
    let group = group_for_admin(store, caller, name).await?;
    let member = user_named(store, user).await?;
    Ok((group, member))
}

#[utoipa::path(
    get,
    path = "/api/groups",
    tag = "users",
    operation_id = "list_groups",
    summary = "Every group and its members (admins only)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The groups", body = Vec<GroupView>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_groups(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<GroupView>>> {
    caller.require_admin()?;
    let store = state.executor.store();
    let mut groups = Vec::new();
    for group in store.list_groups().await? {
        groups.push(group_view(store, group).await?);
    }
    Ok(Json(groups))
}

#[utoipa::path(
    post,
    path = "/api/groups",
    tag = "users",
    operation_id = "create_group",
    summary = "Create a group, named `@name` in reviewer and approver lists (admins only)",
    request_body = CreateGroup,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The group", body = GroupView),
        (status = 400, description = "A malformed body or an invalid name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 409, description = "The name is taken in some case", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create_group(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateGroup>, ApiError>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    caller.require_admin()?;
    let Object(request) = body?;
    check_new_name("group", &request.name)?;
    let store = state.executor.store();
    store
        .create_group(&request.name)
        .await
        .map_err(|e| taken(e, "group"))?;
    audit_installation(
        store,
        &caller,
        "group.create",
        serde_json::json!({ "group": request.name }),
    )
    .await?;
    let group = group_for_admin(store, &caller, &request.name).await?;
    Ok((StatusCode::CREATED, Json(group_view(store, group).await?)))
}

#[utoipa::path(
    get,
    path = "/api/groups/{name}",
    tag = "users",
    operation_id = "get_group",
    summary = "One group and its members (admins only)",
    params(GroupPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such group", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get_group(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupView>> {
    let store = state.executor.store();
    let group = group_for_admin(store, &caller, &name).await?;
    Ok(Json(group_view(store, group).await?))
}

#[utoipa::path(
    delete,
    path = "/api/groups/{name}",
    tag = "users",
    operation_id = "delete_group",
    summary = "Delete a group (admins only)",
    description = "Lists that name `@name` name nobody from then on.",
    params(GroupPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deleted group", body = GroupView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such group", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete_group(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupView>> {
    let store = state.executor.store();
    let group = group_for_admin(store, &caller, &name).await?;
    let view = group_view(store, group.clone()).await?;
    if !store.delete_group(group.id).await? {
        return Err(no_group(&name));
    }
    audit_installation(
        store,
        &caller,
        "group.delete",
        serde_json::json!({ "group": group.name }),
    )
    .await?;
    Ok(Json(view))
}

#[utoipa::path(
    put,
    path = "/api/groups/{name}/members/{user}",
    tag = "users",
    operation_id = "add_group_member",
    summary = "Add a user to a group (admins only; again: no change)",
    params(MemberPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such group or user", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn add_group_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    let store = state.executor.store();
    let (group, member) = group_and_member(store, &caller, &name, &user).await?;
    store.add_group_member(group.id, member.id).await?;
    audit_installation(
        store,
        &caller,
        "group.member.add",
        serde_json::json!({ "group": group.name, "user": member.name }),
    )
    .await?;
    Ok(Json(group_view(store, group).await?))
}

#[utoipa::path(
    delete,
    path = "/api/groups/{name}/members/{user}",
    tag = "users",
    operation_id = "remove_group_member",
    summary = "Remove a user from a group (admins only)",
    params(MemberPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such group or user, or not a member", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn remove_group_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    let store = state.executor.store();
    let (group, member) = group_and_member(store, &caller, &name, &user).await?;
    if !store.remove_group_member(group.id, member.id).await? {
        return Err(ApiError::not_found(format!(
            "'{}' is not a member of '{}'",
            member.name, group.name
        )));
    }
    audit_installation(
        store,
        &caller,
        "group.member.remove",
        serde_json::json!({ "group": group.name, "user": member.name }),
    )
    .await?;
    Ok(Json(group_view(store, group).await?))
}
