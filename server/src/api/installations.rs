//! `GET /api/installations`: the engine's GitHub App installations as the App's
//! `installation` and `installation_repositories` webhooks described them — the account,
//! whether it is active, suspended or deleted, the permissions and events it was granted,
//! the repositories it may reach, and whether the engine accepted it or why it refused it
//! (`crate::webhooks` records and judges them).
//!
//! Invariants: installation admins only (an installation names repositories the caller
//! may have no role on); nothing here asks GitHub, and no credential is shown.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use plue_store::InstallationRow;
use plue_types::status::InstallationState;
use serde::Serialize;
use utoipa::ToSchema;

use super::views::ErrorView;
use super::ApiState;
use crate::access::Caller;
use crate::http_error::ApiResult;

/// One installation of the engine's GitHub App.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InstallationView {
    /// GitHub's installation id.
    pub id: i64,
    /// The user or organization it is installed on.
    pub account: String,
    /// `User`, `Organization` or `Enterprise`.
    pub account_type: String,
    /// `active`, `suspended` or `deleted`.
    #[schema(value_type = String)]
    pub state: InstallationState,
    /// The permissions granted (`checks: write`, ...).
    pub permissions: BTreeMap<String, String>,
    /// The events the App is subscribed to.
    pub events: Vec<String>,
    /// The repositories it may reach, `owner/name` (registered or not).
    pub repositories: Vec<String>,
    /// Whether the engine accepts it: its account is one the operator named
    /// (`--installation-owner`). A refused installation registers nothing and its
    /// deliveries start nothing.
    pub accepted: bool,
    /// Why the engine refused it; absent when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// When Plue first heard of it, and last (ms since the epoch).
    pub created_at: i64,
    pub updated_at: i64,
}

impl InstallationView {
    fn new(row: InstallationRow, repositories: Vec<String>) -> InstallationView {
        InstallationView {
            id: row.id,
            account: row.account,
            account_type: row.account_type,
            state: row.state,
            // Written by the webhook handler from plain words; anything else reads as none.
            permissions: serde_json::from_str(&row.permissions).unwrap_or_default(),
            events: serde_json::from_str(&row.events).unwrap_or_default(),
            repositories,
            accepted: row.refused.is_none(),
            refused: row.refused,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/installations",
    tag = "repos",
    summary = "The engine's GitHub App installations and their repositories",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every installation the App's webhooks named, by id: account, state, permissions, events, the repositories it may reach (registered or not), and whether the engine accepted it or why it refused it", body = Vec<InstallationView>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller is not an installation admin", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_installations(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<InstallationView>>> {
    caller.require_admin()?;
    let store = state.executor.store();
    let mut views = Vec::new();
    for row in store.installations().await? {
        let repositories = store.installation_repos(row.id).await?;
        views.push(InstallationView::new(row, repositories));
    }
    Ok(Json(views))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use plue_store::InstallationFacts;
    use plue_types::status::InstallationState;
    use tower::ServiceExt;

    use super::super::router;
    use crate::testing::{user_with_token, TestApi, TokenScope};

    const ADMIN: &str = "admin-token-of-installations";

    async fn get(api: &TestApi, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get("/api/installations");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router(api.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    // An installation names repositories that a caller may have no role on, and its
    // permissions: only an installation admin reads them, whatever role the caller holds
    // on the repositories it names.
    #[tokio::test]
    async fn only_an_admin_reads_the_installations() {
        let api = TestApi::new(ADMIN).await;
        let store = api.executor.store().clone();
        store
            .record_installation(&InstallationFacts {
                id: 42,
                account: "acme",
                account_type: "Organization",
                state: InstallationState::Active,
                permissions: r#"{"checks":"write"}"#,
                events: r#"["push"]"#,
                refused: None,
            })
            .await
            .unwrap();
        store
            .installation_repos_changed(42, &["acme/app".to_string()], &[])
            .await
            .unwrap();
        let repo = plue_store::testing::create_repo(&store, "acme/app").await;
        store.set_public_read(repo, true).await.unwrap();
        let (status, _) = get(&api, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, _, outsider) = user_with_token(&store, "outsider", TokenScope::default()).await;
        let mut refused = vec![("outsider", outsider)];
        for role in ["reader", "writer", "maintainer"] {
            let (user, _, token) = user_with_token(&store, role, TokenScope::default()).await;
            store.grant_role(repo, user, role).await.unwrap();
            refused.push((role, token));
        }
        for (role, token) in refused {
            let (status, body) = get(&api, Some(&token)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
            assert!(!body.contains("acme/app"), "{role}: {body}");
        }
        let (status, body) = get(&api, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed[0]["id"], 42);
        assert_eq!(listed[0]["state"], "active");
        assert_eq!(listed[0]["permissions"]["checks"], "write");
        assert_eq!(listed[0]["repositories"], serde_json::json!(["acme/app"]));
        assert_eq!(listed[0]["accepted"], true);
        assert!(listed[0].get("refused").is_none(), "{body}");
    }

    #[tokio::test]
    async fn a_refused_installation_is_shown_with_why() {
        let api = TestApi::new(ADMIN).await;
        let store = api.executor.store().clone();
        store
            .record_installation(&InstallationFacts {
                id: 66,
                account: "mallory",
                account_type: "User",
                state: InstallationState::Active,
                permissions: "{}",
                events: "[]",
                refused: Some("not an account this engine accepts"),
            })
            .await
            .unwrap();
        let (status, body) = get(&api, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed[0]["accepted"], false, "{body}");
        assert_eq!(listed[0]["refused"], "not an account this engine accepts");
    }
}
