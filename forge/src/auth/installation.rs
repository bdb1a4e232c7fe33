//! The GitHub App's requests, each authenticated with a fresh JWT: the App itself
//! (`GET /app`), a repository's installation (`GET /repos/{o}/{r}/installation`) and an
//! installation access token narrowed to one repository and a [`Use`]'s permissions
//! (`POST /app/installations/{id}/access_tokens`).
//!
//! Invariants: the JWT goes only into the `Authorization` header; an answer's token goes
//! only into the returned [`Token`]; errors name the request (URL without credentials) and
//! the forge's status and message, with the JWT removed should the forge echo it. A 404 of
//! the installation or a 401/403/422 of a token request is permanent (the App is not
//! installed there, or may not have these permissions), 429 and 5xx are retried.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::app::GitHubApp;
use super::uses::Use;
use crate::status::{api_request, without_url, PostError};
use crate::token::Token;
use crate::url_path::segment;
use crate::Forge;

/// The most bytes of an answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// An installation access token and how long it is valid from the moment it was received.
pub(crate) struct Minted {
    pub token: Token,
    pub valid_for: Duration,
    /// The forge ids of the repositories the token is for, as the answer names them.
    pub repository_ids: Vec<i64>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
    /// The repositories the token reaches (GitHub lists them for a token narrowed to some).
    #[serde(default)]
    repositories: Vec<TokenRepository>,
}

#[derive(Deserialize)]
struct TokenRepository {
    id: i64,
}

#[derive(Deserialize)]
struct App {
    /// Optional in GitHub's description (`integration`), though every App has one: an
    /// answer without it is "names no slug" below, not a parse error.
    #[serde(default)]
    slug: String,
}

/// `GET {api}/app`: the App's slug (its bot account is `<slug>[bot]`).
pub(crate) async fn app_slug(
    client: &reqwest::Client,
    app: &GitHubApp,
    api: &str,
) -> Result<String, PostError> {
    let url = format!("{}/app", api.trim_end_matches('/'));
    let answer: App = send(client, app, reqwest::Method::GET, &url, None).await?;
    if answer.slug.trim().is_empty() {
        return Err(PostError::Permanent(format!(
            "GET {}: the answer names no slug",
            crate::without_credentials(&url)
        )));
    }
    Ok(answer.slug)
}

/// `GET {api}/repos/{owner}/{name}/installation`: the App's installation on `repo`.
pub(crate) async fn installation_of(
    client: &reqwest::Client,
    app: &GitHubApp,
    api: &str,
    repo: &str,
) -> Result<u64, PostError> {
    let (owner, name) = owner_name(repo)?;
    let url = format!(
        "{}/repos/{}/{}/installation",
        api.trim_end_matches('/'),
        segment(owner),
        segment(name)
    );
    let answer: Installation = send(client, app, reqwest::Method::GET, &url, None)
        .await
        .map_err(|e| match e {
            PostError::Permanent(why) if why.contains("HTTP 404") => PostError::Permanent(format!(
                "the GitHub App (id {}) is not installed on {repo}: install it on the repository, or give the repository a personal api_token ({why})",
                app.id()
            )),
            other => other,
        })?;
    Ok(answer.id)
}

/// `POST {api}/app/installations/{id}/access_tokens` for `repo`'s name only, with `use_`'s
/// permissions only. When the registered repository is bound to a forge id (`bound`), a
/// token whose answer does not name that repository id only is refused (never returned,
/// [`PostError::Moved`]): the name, and so the installation found for it, may now be
/// another repository's.
pub(crate) async fn access_token(
    client: &reqwest::Client,
    app: &GitHubApp,
    api: &str,
    installation: u64,
    repo: &str,
    bound: Option<i64>,
    use_: Use,
) -> Result<Minted, PostError> {
    let (_, name) = owner_name(repo)?;
    let url = format!(
        "{}/app/installations/{installation}/access_tokens",
        api.trim_end_matches('/')
    );
    let permissions: BTreeMap<&str, &str> = use_.permissions();
    let body = serde_json::json!({ "repositories": [name], "permissions": permissions });
    let answer: AccessToken = send(client, app, reqwest::Method::POST, &url, Some(&body))
        .await
        .map_err(|e| match e {
            PostError::Permanent(why) => PostError::Permanent(format!(
                "GitHub refused the App an installation token for {repo} ({}): {why}",
                use_.as_str()
            )),
            other => other,
        })?;
    let token = Token::new(answer.token);
    let repository_ids: Vec<i64> = answer.repositories.iter().map(|r| r.id).collect();
    if let Some(bound) = bound {
        if repository_ids != [bound] {
            return Err(super::moved(repo, bound, &repository_ids));
        }
    }
    let valid_for = chrono::DateTime::parse_from_rfc3339(&answer.expires_at)
        .ok()
        .and_then(|at| {
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
            at.duration_since(SystemTime::now()).ok()
        })
        .unwrap_or_default();
    Ok(Minted {
        token,
        valid_for,
        repository_ids,
    })
}

fn owner_name(repo: &str) -> Result<(&str, &str), PostError> {
    repo.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| PostError::Permanent(format!("repository name '{repo}' is not owner/name")))
}

/// One request as the App, its JSON answer read (bounded) and parsed.
async fn send<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    app: &GitHubApp,
    method: reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<T, PostError> {
    let shown = format!("{method} {}", crate::without_credentials(url));
    let jwt = app
        .jwt_at(SystemTime::now())
        .map_err(|e| PostError::Permanent(format!("{shown}: signing the App's JWT: {e}")))?;
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let request = api_request(request, Forge::GitHub, Some(jwt.as_str()));
    let mut response = request
        .send()
        .await
        .map_err(|e| PostError::Retry(format!("{shown}: {}", without_url(&e))))?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| PostError::Retry(format!("{shown}: {}", without_url(&e))))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(PostError::Permanent(format!(
                "{shown}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes).replace(jwt.as_str(), "***");
        let text: String = text.chars().take(300).collect();
        let message = format!("{shown}: HTTP {status}: {}", text.trim());
        return Err(if status.as_u16() == 429 || status.is_server_error() {
            PostError::Retry(message)
        } else {
            PostError::Permanent(message)
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| PostError::Permanent(format!("{shown}: unexpected answer: {e}")))
}
