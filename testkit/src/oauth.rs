//! A fake GitHub or Gitea OAuth2 authorization server for sign-in tests: the authorization
//! endpoint, the token endpoint and `GET /user`, speaking the real wire format.
//!
//! - `GET /login/oauth/authorize?response_type=code&client_id&redirect_uri&state&
//!   code_challenge&code_challenge_method=S256` answers as a forge does for a person
//!   already signed in there who approved the application before: `302` to
//!   `redirect_uri?code=...&state=...`, the `state` exactly as given. Who that person is
//!   is [`FakeOAuth::sign_in_as`]'s login. An unknown client, a redirect URI other than the
//!   registered one, or a missing or non-S256 challenge is a `400` page and no code.
//! - `POST /login/oauth/access_token` takes an `application/x-www-form-urlencoded` body
//!   (`grant_type=authorization_code`, `code`, `redirect_uri`, `code_verifier`, and the
//!   client's credentials in the form or as HTTP Basic) and answers JSON (GitHub: `200` with
//!   `{"error": "bad_verification_code"}` for a bad code, as github.com does; Gitea: `400`
//!   `{"error": "invalid_grant"}`). A code is good once, for its client and redirect URI,
//!   and only with the verifier whose S256 challenge it was given: BASE64URL(SHA-256
//!   (code_verifier)) must equal `code_challenge` (RFC 7636 4.6).
//! - `GET /user` (GitHub: under `/api/v3`, as GitHub Enterprise Server serves it; Gitea:
//!   `/api/v1/user`) with `Authorization: Bearer <access token>` (or `token <...>`)
//!   answers `{"login", "id"}`; without a valid token `401`.
//! - Every token request is recorded ([`FakeOAuth::token_requests`]) with its form, so
//!   tests see what was sent and what the fake refused.
//!
//! Invariant: the server runs on its own thread and runtime (`server_thread`);
//! dropping it stops it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::server_thread::ServerThread;

/// Which forge the fake answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthFlavor {
    GitHub,
    Gitea,
}

/// A token request as the fake received it, and whether it handed out a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub form: HashMap<String, String>,
    /// `None`: a token was handed out; else the `error` answered.
    pub refused: Option<String>,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    login: String,
}

struct Shared {
    flavor: OAuthFlavor,
    client_id: String,
    client_secret: String,
    /// The registered redirect URI (`None`: any).
    redirect_uri: Option<String>,
    login: String,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    token_requests: Vec<TokenRequest>,
    next: u64,
}

type SharedState = Arc<Mutex<Shared>>;

/// The fake server; stops when dropped.
pub struct FakeOAuth {
    url: String,
    flavor: OAuthFlavor,
    shared: SharedState,
    _server: ServerThread,
}

impl FakeOAuth {
    /// Starts a fake `flavor` on `127.0.0.1:<free port>` with one OAuth application
    /// (`client_id`, `client_secret`); the person signed in there is `octocat` until
    /// [`FakeOAuth::sign_in_as`].
    pub fn start(flavor: OAuthFlavor, client_id: &str, client_secret: &str) -> FakeOAuth {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let shared: SharedState = Arc::new(Mutex::new(Shared {
            flavor,
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            redirect_uri: None,
            login: "octocat".to_string(),
            codes: HashMap::new(),
            tokens: HashMap::new(),
            token_requests: Vec::new(),
            next: 1,
        }));
        let user_path = match flavor {
            OAuthFlavor::GitHub => "/api/v3/user",
            OAuthFlavor::Gitea => "/api/v1/user",
        };
        let app = axum::Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route(user_path, get(user))
            .with_state(shared.clone());
        let server = ServerThread::spawn("fake-oauth", "fake OAuth server", listener, app)
            .expect("starting the fake OAuth thread");
        FakeOAuth {
            url: format!("http://{addr}"),
            flavor,
            shared,
            _server: server,
        }
    }

    /// Where people sign in: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The REST API's base: `{url}/api/v3` (GitHub) or `{url}/api/v1` (Gitea).
    pub fn api_url(&self) -> String {
        match self.flavor {
            OAuthFlavor::GitHub => format!("{}/api/v3", self.url),
            OAuthFlavor::Gitea => format!("{}/api/v1", self.url),
        }
    }

    /// The person the authorization endpoint signs in from now on.
    pub fn sign_in_as(&self, login: &str) {
        self.lock().login = login.to_string();
    }

    /// Only this redirect URI is accepted from now on (as the application's registered
    /// callback).
    pub fn register_redirect(&self, uri: &str) {
        self.lock().redirect_uri = Some(uri.to_string());
    }

    /// Every token request so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    /// How many access tokens are live (handed out).
    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn bad_page(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!doctype html><p>{message}</p>"),
    )
        .into_response()
}

async fn authorize(
    State(shared): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut shared = lock(&shared);
    let get = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    if get("client_id") != shared.client_id {
        return bad_page("The client_id is not an application here.");
    }
    let redirect_uri = get("redirect_uri");
    if redirect_uri.is_empty()
        || shared
            .redirect_uri
            .as_deref()
            .is_some_and(|registered| registered != redirect_uri)
    {
        return bad_page(
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
        return bad_page("PKCE with code_challenge_method=S256 is required.");
    }
    let code = format!("code{}x{}", shared.next, std::process::id());
    shared.next += 1;
    let grant = Grant {
        client_id: shared.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        challenge: get("code_challenge").to_string(),
        login: shared.login.clone(),
    };
    shared.codes.insert(code.clone(), grant);
    let mut back = redirect_uri.to_string();
    back.push(if back.contains('?') { '&' } else { '?' });
    back.push_str(&url_encoded(&[
        ("code", code.as_str()),
        ("state", get("state")),
    ]));
    (StatusCode::FOUND, [(header::LOCATION, back)]).into_response()
}

/// `application/x-www-form-urlencoded` pairs, as a query.
fn url_encoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The client's credentials: HTTP Basic (each part form-encoded, RFC 6749 2.3.1) or the
/// form's `client_id` and `client_secret`.
fn credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(pair) = basic {
        if let Some((id, secret)) = pair.split_once(':') {
            return (id.to_string(), secret.to_string());
        }
    }
    (
        form.get("client_id").cloned().unwrap_or_default(),
        form.get("client_secret").cloned().unwrap_or_default(),
    )
}

async fn access_token(
    State(shared): State<SharedState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut shared = lock(&shared);
    let flavor = shared.flavor;
    let (id, secret) = credentials(&headers, &form);
    let get = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let refusal = if id != shared.client_id || secret != shared.client_secret {
        Some((
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        ))
    } else if get("grant_type") != "authorization_code" {
        Some((
            "unsupported_grant_type",
            "Only authorization_code is supported.",
        ))
    } else {
        match shared.codes.remove(get("code")) {
            None => Some((
                "bad_verification_code",
                "The code passed is incorrect or expired.",
            )),
            Some(grant) if grant.client_id != id => Some((
                "bad_verification_code",
                "The code was issued to another client.",
            )),
            Some(grant) if grant.redirect_uri != get("redirect_uri") => Some((
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the one the code was issued for.",
            )),
            Some(grant) => {
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(get("code_verifier").as_bytes()));
                if get("code_verifier").is_empty() || computed != grant.challenge {
                    Some((
                        "bad_verification_code",
                        "The code_verifier does not match the code_challenge.",
                    ))
                } else {
                    let token = format!("gho_fake{}x{}", shared.next, std::process::id());
                    shared.next += 1;
                    shared.tokens.insert(token.clone(), grant.login);
                    shared.token_requests.push(TokenRequest {
                        form: form.clone(),
                        refused: None,
                    });
                    return Json(json!({
                        "access_token": token,
                        "token_type": "bearer",
                        "scope": "",
                    }))
                    .into_response();
                }
            }
        }
    };
    let (error, description) = refusal.expect("refused");
    shared.token_requests.push(TokenRequest {
        form: form.clone(),
        refused: Some(error.to_string()),
    });
    match flavor {
        // github.com answers a refused code with 200 and an error body.
        OAuthFlavor::GitHub => Json(json!({
            "error": error,
            "error_description": description,
            "error_uri": "https://docs.github.com/apps/troubleshooting-oauth-errors",
        }))
        .into_response(),
        OAuthFlavor::Gitea => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": description})),
        )
            .into_response(),
    }
}

async fn user(State(shared): State<SharedState>, headers: HeaderMap) -> Response {
    let shared = lock(&shared);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        });
    match token.and_then(|t| shared.tokens.get(t)) {
        Some(login) => {
            let id = login.bytes().map(u64::from).sum::<u64>();
            Json(json!({"login": login, "id": id})).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Requires authentication"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(verifier: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    /// Authorizes with `challenge`: the code and the state the fake sent back.
    async fn code(http: &reqwest::Client, fake: &FakeOAuth, challenge: &str) -> (String, String) {
        let answer = http
            .get(format!("{}/login/oauth/authorize", fake.url()))
            .query(&[
                ("response_type", "code"),
                ("client_id", "id"),
                ("redirect_uri", "http://127.0.0.1:1/cb"),
                ("state", "s t&=ate"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        let url = reqwest::Url::parse(&location).unwrap();
        let pairs: HashMap<_, _> = url.query_pairs().into_owned().collect();
        (pairs["code"].clone(), pairs["state"].clone())
    }

    #[tokio::test]
    async fn a_code_is_good_once_and_only_with_its_verifier() {
        let fake = FakeOAuth::start(OAuthFlavor::GitHub, "id", "secret");
        fake.sign_in_as("mona");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let verifier = "v".repeat(43);
        let (code_value, state) = code(&http, &fake, &challenge(&verifier)).await;
        assert_eq!(state, "s t&=ate", "state round trip");
        let exchange = |code: String, verifier: String| {
            let http = http.clone();
            let url = format!("{}/login/oauth/access_token", fake.url());
            async move {
                http.post(url)
                    .header("accept", "application/json")
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", "http://127.0.0.1:1/cb"),
                        ("client_id", "id"),
                        ("client_secret", "secret"),
                        ("code_verifier", verifier.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        // A wrong verifier: refused, and the code is spent.
        let wrong = exchange(code_value.clone(), "w".repeat(43)).await;
        assert_eq!(wrong["error"], "bad_verification_code", "{wrong}");
        let again = exchange(code_value, verifier.clone()).await;
        assert_eq!(again["error"], "bad_verification_code", "{again}");
        // A fresh code with its verifier: a token that names mona.
        let (code_value, _) = code(&http, &fake, &challenge(&verifier)).await;
        let good = exchange(code_value, verifier).await;
        let token = good["access_token"].as_str().unwrap();
        let me: serde_json::Value = http
            .get(format!("{}/user", fake.api_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["login"], "mona");
        assert_eq!(fake.token_requests().len(), 3);
    }

    #[tokio::test]
    async fn gitea_refuses_with_400_and_plain_pkce_is_refused() {
        let fake = FakeOAuth::start(OAuthFlavor::Gitea, "id", "secret");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let plain = http
            .get(format!("{}/login/oauth/authorize", fake.url()))
            .query(&[
                ("client_id", "id"),
                ("redirect_uri", "http://127.0.0.1:1/cb"),
                ("code_challenge", "abc"),
                ("code_challenge_method", "plain"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), 400);
        let answer = http
            .post(format!("{}/login/oauth/access_token", fake.url()))
            .basic_auth("id", Some("secret"))
            .form(&[("grant_type", "authorization_code"), ("code", "nope")])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        assert_eq!(fake.api_url(), format!("{}/api/v1", fake.url()));
    }
}
