//! The OAuth2 exchanges every provider shares (RFC 6749 with PKCE): the authorization
//! URL, the code exchanged for tokens (a form POST answered in JSON; GitHub answers errors
//! with 200 and an `error` field), and the forges' "who is this" (`GET /user`).
//!
//! Invariant: the provider's access token is used for the one request that names the user
//! (forges) and then dropped; it is never stored, logged or put in an error.

use serde::Deserialize;
use url::Url;

/// What the token endpoint answered.
#[derive(Deserialize)]
pub(super) struct Tokens {
    pub(super) access_token: Option<String>,
    pub(super) id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientAuth {
    /// `Authorization: Basic` (OpenID Connect's default).
    Basic,
    /// `client_id` and `client_secret` in the form (GitHub, Gitea).
    Post,
}

/// The authorization request's URL.
pub(super) fn authorize_url(endpoint: &Url, params: &[(&str, &str)]) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut().extend_pairs(params);
    url
}

/// Exchanges `code` at `endpoint`; an error says why in words fit for the person signing
/// in (never a token).
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    http: &reqwest::Client,
    endpoint: &Url,
    auth: ClientAuth,
    client_id: &str,
    client_secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Tokens, String> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let mut request = http
        .post(endpoint.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match auth {
        ClientAuth::Basic => {
            // RFC 6749 2.3.1: each part form-encoded first.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(client_id), Some(encode(client_secret)));
        }
        ClientAuth::Post => {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret));
        }
    }
    let response = request.form(&form).send().await.map_err(|e| {
        format!(
            "the provider's token endpoint did not answer ({})",
            e.without_url()
        )
    })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the provider's token answer: {}", e.without_url()))?;
    let tokens: Tokens = serde_json::from_str(&body).map_err(|_| {
        format!(
            "the provider's token endpoint answered {status} with something that is not its JSON"
        )
    })?;
    if let Some(error) = &tokens.error {
        let detail = tokens.error_description.as_deref().unwrap_or("");
        return Err(format!("the provider refused the code: {error} {detail}")
            .trim()
            .to_string());
    }
    if !status.is_success() {
        return Err(format!("the provider's token endpoint answered {status}"));
    }
    Ok(tokens)
}

#[derive(Deserialize)]
struct ForgeUser {
    login: String,
}

/// The login of the account `access_token` belongs to: `GET {api}/user` (GitHub's and
/// Gitea's shape: `{"login": ...}`).
pub(super) async fn forge_login(
    http: &reqwest::Client,
    api: &Url,
    access_token: &str,
) -> Result<String, String> {
    let url = format!("{}/user", api.as_str().trim_end_matches('/'));
    let response = http
        .get(url)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("the forge's API did not answer ({})", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the forge's API answered {status} to GET /user"));
    }
    let user: ForgeUser = response
        .json()
        .await
        .map_err(|_| "the forge's GET /user answer has no login".to_string())?;
    if !plue_store::valid_name(&user.login) {
        return Err(format!("the forge's login {:?} is not a login", user.login));
    }
    Ok(user.login)
}
