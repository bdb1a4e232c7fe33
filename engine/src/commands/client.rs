//! A small client of the public HTTP API for the CLI's client verbs.
//!
//! Invariant: a refusal reads as the server's one-line message and status, except a 401,
//! which says how the CLI sends a token (`PLUE_TOKEN` or `--token`), not the HTTP header
//! the server's message names.

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of `base` with `token` (`--token`, `PLUE_TOKEN`) or, without one, the
    /// token `plue login` kept for `base`.
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<ApiClient> {
        let token = match token {
            Some(token) => Some(token),
            None => super::login::stored_token(base)?,
        };
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .build()
                .context("building the HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether requests carry a token.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token requests carry (given, or kept by `plue login`).
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `request` with the token, when there is one.
    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::POST, path, Some(&serde_json::json!({})))
            .await
    }

    /// Sends `body` (JSON) with the token; decodes the answer, or fails with the server's
    /// error message. An empty success answer decodes as JSON `null`.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        decode(response, self.token.is_some()).await
    }
}

/// What a 401 from the server means for the person at the terminal: how to give the CLI a
/// token (`had_token`: one was sent and refused).
pub(crate) fn token_hint(had_token: bool) -> &'static str {
    if had_token {
        "the server refused the token given by PLUE_TOKEN or --token (is it revoked, expired or \
         for another server?)"
    } else {
        "this server needs a token: run `plue login`, set PLUE_TOKEN or pass --token (make \
         one with `plue token create`)"
    }
}

/// The answer's JSON, or the server's error message as [`ApiClient::send`] fails with it.
pub(crate) async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    had_token: bool,
) -> anyhow::Result<T> {
    let status = response.status();
    if status.is_success() {
        let bytes = response
            .bytes()
            .await
            .context("reading the server's answer")?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        return serde_json::from_slice(bytes).context("reading the server's answer");
    }
    let message = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| status.to_string());
    if status == reqwest::StatusCode::UNAUTHORIZED {
        // The server's message names the header; the CLI's user sets a variable or a flag.
        bail!("{} ({status})", token_hint(had_token));
    }
    bail!("{message} ({status})")
}
