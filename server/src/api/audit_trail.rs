//! `GET /api/audit`: the audit trail's read side — who did what, newest first.
//!
//! Invariants:
//! - An installation admin reads every event; a maintainer reads only the events of the
//!   repositories it maintains (as its token narrows it), never installation-wide ones
//!   (users, groups, tokens); anyone else is refused (403, 401 anonymous).
//! - A repository the caller may not read is a 404, as everywhere.
//! - Rows are only ever read here; [`plue_store::Store::audit`] writes them.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use plue_store::AuditFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::ErrorView;
use super::ApiState;
use crate::access::{Caller, Readable, Role};
use crate::http_error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only this repository's events (`owner/name`).
    #[param(
        pattern = r"^[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}$",
        example = "octo/hello"
    )]
    repo: Option<String>,
    /// Only this run's events.
    #[param(minimum = 1)]
    run: Option<i64>,
    /// Only events older than this event id (paging back).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// At most this many events (default 100; 1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The most events one page holds, and how many when the caller names no `limit`.
const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

impl AuditQuery {
    /// Checks every parameter against what the document declares (ids from 1, `limit` 1 to
    /// [`MAX_LIMIT`], `repo` as `owner/name`) and returns the page size: a value outside
    /// the range is a 400 naming it, never a silent clamp.
    fn checked_limit(&self) -> ApiResult<i64> {
        for (name, value) in [("run", self.run), ("before", self.before)] {
            if let Some(value) = value.filter(|v| *v < 1) {
                return Err(ApiError::bad_request(format!(
                    "{name} is {value}; it must be an event or run id, 1 or more"
                )));
            }
        }
        if let Some(repo) = &self.repo {
            super::repos::check_repo_name(repo)?;
        }
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            Some(limit) => Err(ApiError::bad_request(format!(
                "limit is {limit}; it must be 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

/// One recorded event.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AuditView {
    pub id: i64,
    /// When, in milliseconds since the epoch.
    pub at: i64,
    /// Who, as shown: a user name, `schedule`, a forge login.
    pub actor: String,
    #[schema(required = true)]
    pub user_id: Option<i64>,
    /// What, dotted: `run.cancel`, `token.create`, `user.create`, ...
    pub action: String,
    /// The repository (`owner/name`) it concerns, if any.
    #[schema(required = true)]
    pub repository: Option<String>,
    #[schema(required = true)]
    pub run_id: Option<i64>,
    /// What else was kept (never a secret value or a token).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "users",
    operation_id = "list_audit",
    summary = "The audit trail, newest first",
    description = "Admins read every event; maintainers the events of the repositories they \
                   maintain.",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The events", body = Vec<AuditView>),
        (status = 400, description = "An unknown or malformed query parameter, or an invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Neither an admin nor a maintainer (of that repository)", body = ErrorView),
        (status = 404, description = "No such repository", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_audit(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditView>>> {
    caller.require_signed_in()?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.checked_limit()?;
    let store = state.executor.store();
    let repos = match &query.repo {
        Some(name) => {
            let repo = caller.visible_repo(store, name, Role::Maintainer).await?;
            Some(vec![repo.id])
        }
        None if caller.is_admin() => None,
        None => {
            let candidates = match caller.readable(store).await? {
                Readable::All => store
                    .list_repos()
                    .await?
                    .into_iter()
                    .map(|r| r.id)
                    .collect(),
                Readable::Repos(ids) => ids.into_iter().collect::<Vec<_>>(),
            };
            let mut maintained = Vec::new();
            for id in candidates {
                if caller.role_on(store, id).await? == Some(Role::Maintainer) {
                    maintained.push(id);
                }
            }
            if maintained.is_empty() {
                return Err(crate::access::forbidden(
                    "the audit trail needs an installation admin, or maintainer on a repository",
                ));
            }
            Some(maintained)
        }
    };
    let rows = store
        .audit_events(&AuditFilter {
            repos,
            run_id: query.run,
            before: query.before,
            limit,
        })
        .await?;
    let mut names: HashMap<i64, Option<String>> = HashMap::new();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let repository = match row.repo_id {
            None => None,
            Some(id) => match names.get(&id) {
                Some(name) => name.clone(),
                None => {
                    let name = store.repo_by_id(id).await?.map(|r| r.name);
                    names.insert(id, name.clone());
                    name
                }
            },
        };
        events.push(AuditView {
            id: row.id,
            at: row.at,
            actor: row.actor,
            user_id: row.user_id,
            action: row.action,
            repository,
            run_id: row.run_id,
            detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
        });
    }
    Ok(Json(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(run: Option<i64>, before: Option<i64>, limit: Option<i64>, repo: &str) -> AuditQuery {
        AuditQuery {
            repo: (!repo.is_empty()).then(|| repo.to_string()),
            run,
            before,
            limit,
        }
    }

    fn refusal(q: AuditQuery) -> String {
        match q.checked_limit() {
            Err(ApiError::Client(axum::http::StatusCode::BAD_REQUEST, message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    // regression: `run=0`, `before=-1` and `limit=0` or `5000` answered 200 (the limit
    // clamped silently) although the document declares their minimum and maximum.
    #[test]
    fn every_parameter_is_checked_as_documented() {
        assert_eq!(
            query(None, None, None, "").checked_limit().unwrap(),
            DEFAULT_LIMIT
        );
        assert_eq!(
            query(Some(1), Some(1), Some(1), "octo/hello")
                .checked_limit()
                .unwrap(),
            1
        );
        assert_eq!(
            query(None, None, Some(1000), "").checked_limit().unwrap(),
            1000
        );
        assert!(refusal(query(Some(0), None, None, "")).contains("run is 0"));
        assert!(refusal(query(None, Some(-1), None, "")).contains("before is -1"));
        assert!(
            refusal(query(None, None, Some(0), "")).contains("limit is 0; it must be 1 to 1000")
        );
        assert!(refusal(query(None, None, Some(1001), "")).contains("limit is 1001"));
        assert!(refusal(query(None, None, None, "octo")).contains("expected owner/name"));
        assert!(refusal(query(None, None, None, "octo/../x")).contains("expected owner/name"));
    }
}
