//! The App mode's answer bodies in GitHub's shapes (REST docs: "Get the authenticated
//! app" → `integration`, "Get a repository installation" → `installation`, "Create an
//! installation access token" → `installation-token`), with the fake's URLs.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::AppConfig;

/// GitHub's `date-time` of `at` (whole seconds, UTC).
pub(crate) fn date_time(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const WHEN: &str = "2026-11-25T00:00:00Z";

fn api(url: &str) -> String {
    format!("{url}/api/v3")
}

/// `simple-user` of an account (an organisation or the App's owner).
fn account(url: &str, login: &str, kind: &str) -> Value {
    let user = format!("{}/users/{login}", api(url));
    json!({
        "login": login,
        "id": 1,
        "node_id": format!("O_{login}"),
        "avatar_url": format!("{url}/avatars/{login}"),
        "gravatar_id": "",
        "url": user,
        "html_url": format!("{url}/{login}"),
        "followers_url": format!("{user}/followers"),
        "following_url": format!("{user}/following{{/other_user}}"),
        "gists_url": format!("{user}/gists{{/gist_id}}"),
        "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{user}/subscriptions"),
        "organizations_url": format!("{user}/orgs"),
        "repos_url": format!("{user}/repos"),
        "events_url": format!("{user}/events{{/privacy}}"),
        "received_events_url": format!("{user}/received_events"),
        "type": kind,
        "site_admin": false,
    })
}

/// `GET /app`: the App (`integration`).
pub(crate) fn app(url: &str, config: &AppConfig) -> Value {
    json!({
        "id": config.id,
        "slug": config.slug,
        "client_id": format!("Iv1.{:016x}", config.id),
        "node_id": format!("A_{}", config.id),
        "owner": account(url, "plue-owner", "Organization"),
        "name": config.slug,
        "description": "Plue's test App",
        "external_url": url,
        "html_url": format!("{url}/apps/{}", config.slug),
        "created_at": WHEN,
        "updated_at": WHEN,
        "permissions": config.permissions,
        "events": ["issues", "issue_comment", "pull_request", "push"],
        "installations_count": 1,
    })
}

/// `GET /repos/{owner}/{repo}/installation` (`installation`).
pub(crate) fn installation(url: &str, config: &AppConfig, id: u64, owner: &str) -> Value {
    json!({
        "id": id,
        "account": account(url, owner, "Organization"),
        "repository_selection": "selected",
        "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", api(url)),
        "repositories_url": format!("{}/installation/repositories", api(url)),
        "html_url": format!("{url}/organizations/{owner}/settings/installations/{id}"),
        "app_id": config.id,
        "app_slug": config.slug,
        "target_id": 1,
        "target_type": "Organization",
        "permissions": config.permissions,
        "events": ["issues", "issue_comment", "pull_request", "push"],
        "created_at": WHEN,
        "updated_at": WHEN,
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": null,
    })
}

/// A `repository` of the token's answer: GitHub's full shape, as every other answer of
/// the fake gives it.
fn repository(url: &str, full_name: &str) -> Value {
    super::super::github_json::repository(url, full_name)
}

/// `POST /app/installations/{id}/access_tokens`'s 201 (`installation-token`).
pub(crate) fn access_token(
    url: &str,
    token: &str,
    expires_at: SystemTime,
    permissions: &std::collections::BTreeMap<String, String>,
    repositories: &[String],
) -> Value {
    json!({
        "token": token,
        "expires_at": date_time(expires_at),
        "permissions": permissions,
        "repository_selection": "selected",
        "repositories": repositories.iter().map(|r| repository(url, r)).collect::<Vec<_>>(),
    })
}
