//! Commit statuses: `POST {api}/repos/{owner}/{repo}/statuses/{sha}` on GitHub and Gitea,
//! which take the same body (`state`, `target_url`, `description`, `context`) and differ in
//! the authorization scheme (`Bearer` vs `token`).
//!
//! Invariant: the token only ever goes into the `Authorization` header, never into an
//! error message; failures say whether a retry can help ([`PostError::Retry`]: network
//! errors, 429, 5xx) or not ([`PostError::Permanent`]: other 4xx), or that the forge
//! refused the token itself ([`PostError::Refused`]: a 401, `Bad credentials`), which
//! `ForgeAuth::renewing` (in `auth`) answers.

use std::time::Duration;

use plue_outbound::Outbound;
use plue_types::status::CommitState;
use serde::Serialize;

use super::Forge;

/// GitHub refuses longer descriptions.
const MAX_DESCRIPTION_CHARS: usize = 140;

/// Where a status goes.
#[derive(Debug, Clone)]
pub struct StatusTarget<'a> {
    pub forge: Forge,
    /// e.g. `https://api.github.com` or `https://gitea.example.com/api/v1`.
    pub api_url: &'a str,
    pub token: Option<&'a str>,
    /// `owner/name`.
    pub repo: &'a str,
    pub sha: &'a str,
}

/// The body both forges accept. Its texts passed the run's outbound wall; the link is the
/// engine's own dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: CommitState,
    pub target_url: String,
    pub description: Outbound,
    pub context: Outbound,
}

/// [`CommitStatus`] as it is sent.
#[derive(Serialize)]
struct Wire<'a> {
    state: CommitState,
    target_url: &'a str,
    description: String,
    context: &'a str,
}

pub use crate::post_error::PostError;

/// Posts one status.
pub async fn post(
    client: &reqwest::Client,
    target: &StatusTarget<'_>,
    status: &CommitStatus,
) -> Result<(), PostError> {
    let Some((owner, name)) = target.repo.split_once('/') else {
        return Err(PostError::Permanent(format!(
            "repository name '{}' is not owner/name",
            target.repo
        )));
    };
    let url = format!(
        "{}/repos/{}/{}/statuses/{}",
        target.api_url.trim_end_matches('/'),
        owner,
        name,
        target.sha
    );
    // The error is shown to the run's readers: never with the URL's credentials.
    let shown = super::without_credentials(&url);
    // Cut, never added to: a checked text stays checked.
    let mut description = status.description.as_str().to_owned();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        description = description
            .chars()
            .take(MAX_DESCRIPTION_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    let body = Wire {
        state: status.state,
        target_url: &status.target_url,
        description,
        context: status.context.as_str(),
    };
    let request = api_request(client.post(&url).json(&body), target.forge, target.token);
    let response = request
        .send()
        .await
        .map_err(|e| PostError::Retry(format!("POST {shown}: {}", without_url(&e))))?;
    let code = response.status();
    if code.is_success() {
        return Ok(());
    }
    Err(refusal("POST", &shown, response, target.token).await)
}

/// `request` with what both forges' APIs expect: a time limit, the user agent, the media
/// type, and the token — only ever in the `Authorization` header (`Bearer` on GitHub,
/// `token` on Gitea).
pub(crate) fn api_request(
    request: reqwest::RequestBuilder,
    forge: Forge,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = request
        .timeout(Duration::from_secs(15))
        .header(reqwest::header::USER_AGENT, "plue");
    request = match forge {
        Forge::GitHub => request
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"),
        Forge::Gitea => request.header(reqwest::header::ACCEPT, "application/json"),
    };
    if let Some(token) = token {
        let scheme = match forge {
            Forge::GitHub => "Bearer",
            Forge::Gitea => "token",
        };
        request = request.header(reqwest::header::AUTHORIZATION, format!("{scheme} {token}"));
    }
    request
}

/// The error of an unsuccessful answer: [`PostError::Refused`] when the forge refused
/// `token` itself ([`crate::post_error::http_refused`]), [`PostError::Retry`] for 429 and 5xx,
/// else [`PostError::Permanent`], with the start of the forge's body — without `token`,
/// which a strange forge may repeat (its error echoing the request's headers). `shown` is
/// the URL without credentials.
pub(crate) async fn refusal(
    method: &str,
    shown: &str,
    response: reqwest::Response,
    token: Option<&str>,
) -> PostError {
    let code = response.status();
    let mut text = response.text().await.unwrap_or_default();
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        text = text.replace(token, "***");
    }
    let text: String = text.chars().take(300).collect();
    let message = format!("{method} {shown}: HTTP {code}: {}", text.trim());
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        if crate::post_error::http_refused(code, &text) {
            let token = crate::token::Token::new(token.to_string());
            return PostError::Refused(crate::post_error::Refused::new(message, token));
        }
    }
    if code.as_u16() == 429 || code.is_server_error() {
        PostError::Retry(message)
    } else {
        PostError::Permanent(message)
    }
}

/// reqwest's error text without the URL it already repeats.
pub(crate) fn without_url(error: &reqwest::Error) -> String {
    let mut error = error.to_string();
    if let Some(start) = error.find(" for url (") {
        error.truncate(start);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The attack (issue 29): a repository cloned with credentials in its URL, or given an
    // api_url holding them, had a refused status's error — shown to every reader of the
    // run in its commit statuses — repeat that URL, credentials and all.
    #[tokio::test]
    async fn a_refusal_never_repeats_the_urls_credentials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let clone_url = format!("http://bot:s3cr3t@127.0.0.1:{port}/acme/app.git");
        let derived = Forge::Gitea.default_api_url(&clone_url).unwrap();
        assert_eq!(derived, format!("http://127.0.0.1:{port}/api/v1"));
        let given = format!("http://bot:s3cr3t@127.0.0.1:{port}/api/v1");
        for api_url in [derived, given] {
            let target = StatusTarget {
                forge: Forge::Gitea,
                api_url: &api_url,
                token: Some("t"),
                repo: "acme/app",
                sha: "0123456789abcdef0123456789abcdef01234567",
            };
            let wall = plue_outbound::Checker::new(&plue_outbound::Secrets::new(), ["plue"]);
            let status = CommitStatus {
                state: CommitState::Success,
                target_url: "http://plue/runs/1".into(),
                description: wall.check("done").unwrap(),
                context: wall.check("plue/ci").unwrap(),
            };
            let refused = post(&reqwest::Client::new(), &target, &status)
                .await
                .unwrap_err()
                .to_string();
            assert!(refused.contains("HTTP 404"), "{refused}");
            assert!(!refused.contains("s3cr3t"), "{refused}");
        }
    }
}
