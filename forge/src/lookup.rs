//! Read-only lookups in a forge's REST API (GitHub v3, Gitea v1) with the repository's
//! `api_url` and the credential [`ForgeAuth`] gives for [`Use::Lookup`] (its `api_token`,
//! or the GitHub App's installation token): a pull request's base and head (a comment's
//! payload names none), the login a personal token writes as (`GET /user`) and, through
//! [`super::permission`], a user's permission on the repository.
//!
//! Invariants: only `GET`; the token goes only into the `Authorization` header, never into
//! a URL or an error message; every answer is bounded in time (as commit statuses') and
//! size (1 MiB), and path segments are percent-encoded, so a login or number from a payload
//! cannot reach another endpoint. A refused token is an error carrying
//! [`crate::auth::Refused`] (never "not found"), for the caller's
//! [`ForgeAuth::renewing`].

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::{http_refused, ForgeAuth, Refused, Token, Use};
use super::url_path::segment;
use super::Forge;
use plue_store::RepoRow;

/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Where lookups go: the repository's API and the token to send.
#[derive(Clone)]
pub struct ApiTarget {
    pub forge: Forge,
    /// e.g. `https://api.github.com` or `https://gitea.example.com/api/v1`.
    pub api_url: String,
    pub token: Option<Token>,
    /// `owner/name`.
    pub repo: String,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTarget")
            .field("forge", &self.forge)
            .field("api_url", &super::without_credentials(&self.api_url))
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

/// What a `GET` found.
#[derive(Debug)]
pub enum Found<T> {
    Yes(T),
    /// 404: no such thing (or, for a private repository, not visible to the token).
    NotFound,
}

/// A pull request's base and head as the forge's API says them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRefs {
    pub base: PullSide,
    pub head: PullSide,
}

/// An account as `GET /user` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub login: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullSide {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
}

impl ApiTarget {
    /// `repo`'s forge API (`None`: it has none — as for commit statuses, a repository with
    /// neither `api_url` nor a credential is not asked anything), with the credential
    /// `auth` gives for lookups.
    pub async fn of_repo(auth: &ForgeAuth, repo: &RepoRow) -> anyhow::Result<Option<ApiTarget>> {
        let Some(forge) = Forge::parse(&repo.forge) else {
            return Ok(None);
        };
        if repo.api_url.is_none() && !auth.has_credential(repo) {
            return Ok(None);
        }
        let Some(api_url) = repo
            .api_url
            .clone()
            .or_else(|| forge.default_api_url(&repo.clone_url))
        else {
            return Ok(None);
        };
        let token = auth
            .token(repo, Use::Lookup)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("forge token of {}", repo.name)))?;
        Ok(Some(ApiTarget {
            forge,
            api_url,
            token,
            repo: repo.name.clone(),
        }))
    }

    /// `{api_url}/repos/{owner}/{name}/{rest…}` with every segment encoded.
    fn url(&self, rest: &[&str]) -> anyhow::Result<String> {
        let (owner, name) = self
            .repo
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("repository name '{}' is not owner/name", self.repo))?;
        let mut url = format!(
            "{}/repos/{}/{}",
            self.api_url.trim_end_matches('/'),
            segment(owner),
            segment(name)
        );
        for part in rest {
            url.push('/');
            url.push_str(&segment(part));
        }
        Ok(url)
    }

    /// `GET` the JSON at `rest` below the repository.
    pub async fn get<T: DeserializeOwned>(
        &self,
        client: &reqwest::Client,
        rest: &[&str],
    ) -> anyhow::Result<Found<T>> {
        let url = self.url(rest)?;
        self.get_url(client, url).await
    }

    /// `GET /user` (both forges): the account the token acts as — the one every comment,
    /// label and pull request the engine writes comes from.
    pub async fn token_login(&self, client: &reqwest::Client) -> anyhow::Result<Found<Account>> {
        let url = format!("{}/user", self.api_url.trim_end_matches('/'));
        self.get_url(client, url).await
    }

    async fn get_url<T: DeserializeOwned>(
        &self,
        client: &reqwest::Client,
        url: String,
    ) -> anyhow::Result<Found<T>> {
        let shown = super::without_credentials(&url);
        // The same headers and token scheme as commit statuses.
        let request = super::status::api_request(
            client.get(&url),
            self.forge,
            self.token.as_ref().map(Token::expose),
        );
        let mut response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {shown}: {}", e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Found::NotFound);
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("GET {shown}: {}", e.without_url()))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER_BYTES {
                anyhow::bail!("GET {shown}: the answer is larger than {MAX_ANSWER_BYTES} bytes");
            }
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            let message = format!("GET {shown}: HTTP {status}: {}", text.trim());
            // The token itself refused: the caller's `ForgeAuth::renewing` answers it.
            if let Some(token) = self.token.as_ref().filter(|_| http_refused(status, &text)) {
                return Err(anyhow::Error::new(Refused::new(message, token.clone())));
            }
            anyhow::bail!(message);
        }
        serde_json::from_slice(&bytes)
            .map(Found::Yes)
            .map_err(|e| anyhow::anyhow!("GET {shown}: unexpected answer: {e}"))
    }

    /// `GET /repos/{o}/{r}/pulls/{n}` (both forges): the pull request's base and head.
    pub async fn pull_request(
        &self,
        client: &reqwest::Client,
        number: u64,
    ) -> anyhow::Result<Found<PullRefs>> {
        self.get(client, &["pulls", &number.to_string()]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_leave_their_place() {
        let target = ApiTarget {
            forge: Forge::GitHub,
            api_url: "https://api.example.com/".into(),
            token: Some(Token::new("t0ken".into())),
            repo: "octo/hello".into(),
        };
        assert_eq!(
            target
                .url(&["collaborators", "../../admin?x=1#", "permission"])
                .unwrap(),
            "https://api.example.com/repos/octo/hello/collaborators/..%2F..%2Fadmin%3Fx%3D1%23/permission"
        );
        assert!(target.url(&[".."]).unwrap().ends_with("/octo/hello/%2E%2E"));
        assert!(!format!("{target:?}").contains("t0ken"));
    }

    /// A server that records the `Authorization` header of each request and answers
    /// `answer(path)`.
    async fn server(
        answer: fn(&str) -> axum::response::Response,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::extract::State;
        use axum::http::{HeaderMap, Uri};
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let app = axum::Router::new()
            .fallback(
                move |State(seen): State<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
                      uri: Uri,
                      headers: HeaderMap| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    seen.lock().unwrap().push(auth);
                    answer(uri.path())
                },
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://127.0.0.1:{port}"), seen)
    }

    // The forge (or whoever answers for it) redirects a lookup elsewhere: the token never
    // follows to another host.
    #[tokio::test]
    async fn a_redirect_to_another_host_carries_no_token() {
        use axum::response::IntoResponse;
        let (elsewhere, seen_elsewhere) =
            server(|_| axum::Json(serde_json::json!({"login": "x"})).into_response()).await;
        // The same server as `localhost`: another host to the client.
        let elsewhere = elsewhere.replace("127.0.0.1", "localhost");
        static TO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TO.set(elsewhere).unwrap();
        let (forge, seen_forge) = server(|_| {
            axum::response::Redirect::temporary(&format!("{}/user", TO.get().unwrap()))
                .into_response()
        })
        .await;
        let target = ApiTarget {
            forge: Forge::GitHub,
            api_url: forge,
            token: Some(Token::new("t0ken".into())),
            repo: "octo/hello".into(),
        };
        let found = target.token_login(&reqwest::Client::new()).await.unwrap();
        assert!(matches!(found, Found::Yes(Account { ref login }) if login == "x"));
        assert_eq!(*seen_forge.lock().unwrap(), ["Bearer t0ken"]);
        assert_eq!(*seen_elsewhere.lock().unwrap(), ["-"]);
    }
}
