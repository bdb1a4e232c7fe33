//! The handlers of the sign-in flow (module docs of [`super`]): start, callback and the
//! providers' list (`plue login`'s code exchange is `cli_token.rs`).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use plue_store::{now_ms, Audit, CliRequest, NewSignIn, NewToken};
use plue_vault::tokens;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::oauth::{self, ClientAuth};
use super::people::{self, Account};
use super::{pkce, Kind, Provider, SignIn};
use crate::access::SESSION_TTL_MS;
use crate::web::{cookie, local_path, session_cookies, sign_in_page};

/// The cookie binding a sign-in to the browser that started it.
const ATTEMPT_COOKIE: &str = "plue_sign_in";
/// How long a sign-in may take, provider's page included.
const ATTEMPT_TTL_MS: i64 = 10 * 60 * 1000;
/// How long `plue login` has to exchange its code.
const CLI_CODE_TTL_MS: i64 = 2 * 60 * 1000;
/// Most sign-ins under way at once (anyone may start one; each lives ten minutes).
const MOST_UNDER_WAY: i64 = 10_000;
/// Longest code, state or verifier taken from a query or body.
pub(super) const MAX_PARAM: usize = 2048;

#[derive(Debug, Deserialize)]
pub(super) struct StartQuery {
    next: Option<String>,
    cli_redirect: Option<String>,
    cli_state: Option<String>,
    cli_challenge: Option<String>,
}

/// A refused sign-in: the sign-in page with why.
struct Refusal {
    status: StatusCode,
    next: String,
    message: String,
}

fn refuse(status: StatusCode, next: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        next: next.to_string(),
        message: message.into(),
    }
}

impl SignIn {
    fn refused(&self, refusal: Refusal) -> Response {
        sign_in_page(
            refusal.status,
            &refusal.next,
            &refusal.message,
            &self.links(),
        )
    }

    fn internal(&self, error: anyhow::Error) -> Response {
        tracing::error!("sign-in: {error:#}");
        self.refused(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/",
            "The sign-in failed on the engine's side (internal error): try again.",
        ))
    }

    /// The `plue_sign_in` cookie: `value` for ten minutes, or cleared.
    fn attempt_cookie(&self, value: &str) -> HeaderValue {
        let age = if value.is_empty() {
            0
        } else {
            ATTEMPT_TTL_MS / 1000
        };
        let secure = if self.0.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{ATTEMPT_COOKIE}={value}; Path=/sign-in/; HttpOnly; SameSite=Lax; Max-Age={age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("plue_invalid=1"))
    }
}

/// `GET /sign-in/{provider}`: remembers a sign-in and sends the browser to the provider.
pub(super) async fn start(
    State(sign_in): State<SignIn>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
) -> Response {
    let next = local_path(query.next.as_deref().unwrap_or("/"));
    let Some(provider) = sign_in.provider(&name) else {
        return sign_in.refused(refuse(
            StatusCode::NOT_FOUND,
            &next,
            format!("This engine has no sign-in provider '{name}'."),
        ));
    };
    let cli = match cli_request(&query) {
        Ok(cli) => cli,
        Err(message) => return sign_in.refused(refuse(StatusCode::BAD_REQUEST, &next, message)),
    };
    match begin(&sign_in, provider, &next, cli).await {
        Ok(None) => sign_in.refused(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &next,
            "Too many sign-ins are under way: try again in a few minutes.",
        )),
        Ok(Some((id, url))) => {
            let mut response = Redirect::to(url.as_str()).into_response();
            response
                .headers_mut()
                .append(header::SET_COOKIE, sign_in.attempt_cookie(&id));
            response
        }
        Err(e) => sign_in.internal(e),
    }
}

/// Stores a new sign-in: the browser's id and the provider's authorization URL.
async fn begin(
    sign_in: &SignIn,
    provider: &Provider,
    next: &str,
    cli: Option<CliRequest>,
) -> anyhow::Result<Option<(String, Url)>> {
    let id = pkce::random()?;
    let state = pkce::random()?;
    let verifier = pkce::random()?;
    let nonce = pkce::random()?;
    let stored = sign_in
        .0
        .store
        .begin_sign_in(
            &NewSignIn {
                id_hash: &tokens::hash_token(&id),
                provider: provider.name,
                state: &state,
                verifier: &verifier,
                nonce: &nonce,
                next_path: next,
                cli,
                expires_at: now_ms() + ATTEMPT_TTL_MS,
            },
            MOST_UNDER_WAY,
        )
        .await?;
    if !stored {
        return Ok(None);
    }
    let challenge = pkce::challenge(&verifier);
    let redirect_uri = sign_in.redirect_uri(provider);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let url = match &provider.kind {
        Kind::Oidc {
            discovered, scopes, ..
        } => {
            params.push(("scope", scopes.as_str()));
            params.push(("nonce", nonce.as_str()));
            oauth::authorize_url(&discovered.authorization_endpoint, &params)
        }
        Kind::Forge {
            authorize, scopes, ..
        } => {
            if let Some(scopes) = scopes {
                params.push(("scope", scopes));
            }
            oauth::authorize_url(authorize, &params)
        }
    };
    Ok(Some((id, url)))
}

/// `plue login`'s part of a start: all three parameters or none; the redirect a loopback
/// `http://127.0.0.1:<port>/callback` (or `[::1]`), the challenge an S256 one.
fn cli_request(query: &StartQuery) -> Result<Option<CliRequest>, String> {
    let (redirect, state, challenge) =
        match (
            query.cli_redirect.as_deref(),
            query.cli_state.as_deref(),
            query.cli_challenge.as_deref(),
        ) {
            (None, None, None) => return Ok(None),
            (Some(r), Some(s), Some(c)) => (r, s, c),
            _ => return Err(
                "plue login's sign-in needs cli_redirect, cli_state and cli_challenge together."
                    .into(),
            ),
        };
    let url = Url::parse(redirect).map_err(|_| "cli_redirect is not a URL.".to_string())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    };
    if url.scheme() != "http"
        || !loopback
        || url.port().is_none()
        || url.path() != "/callback"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(
            "cli_redirect must be http://127.0.0.1:<port>/callback (plue login's own).".into(),
        );
    }
    if state.is_empty() || state.len() > 256 || !state.chars().all(|c| c.is_ascii_graphic()) {
        return Err("cli_state must be 1 to 256 visible ASCII characters.".into());
    }
    if !pkce::is_challenge(challenge) {
        return Err("cli_challenge must be an S256 PKCE challenge.".into());
    }
    Ok(Some(CliRequest {
        redirect: url.to_string(),
        state: state.to_string(),
        challenge: challenge.to_string(),
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /sign-in/{provider}/callback`: the provider sent the browser back.
pub(super) async fn callback(
    State(sign_in): State<SignIn>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let mut response = match finish(&sign_in, &name, &headers, query).await {
        Ok(Ok(response)) => response,
        Ok(Err(refusal)) => {
            tracing::info!(provider = %name, "sign-in refused: {}", refusal.message);
            sign_in.refused(refusal)
        }
        Err(e) => sign_in.internal(e),
    };
    // The sign-in is used up whatever happened.
    response
        .headers_mut()
        .append(header::SET_COOKIE, sign_in.attempt_cookie(""));
    response
}

async fn finish(
    sign_in: &SignIn,
    name: &str,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> anyhow::Result<Result<Response, Refusal>> {
    let store = &sign_in.0.store;
    let Some(provider) = sign_in.provider(name) else {
        return Ok(Err(refuse(
            StatusCode::NOT_FOUND,
            "/",
            format!("This engine has no sign-in provider '{name}'."),
        )));
    };
    let Some(id) = cookie(headers, ATTEMPT_COOKIE) else {
        return Ok(Err(refuse(
            StatusCode::BAD_REQUEST,
            "/",
            "This sign-in was not started in this browser, or took too long: start again.",
        )));
    };
    // Taken (deleted) here: checked exactly once.
    let Some(attempt) = store
        .take_sign_in(&tokens::hash_token(id), now_ms())
        .await?
    else {
        return Ok(Err(refuse(
            StatusCode::BAD_REQUEST,
            "/",
            "This sign-in is unknown, was used already or took too long: start again.",
        )));
    };
    let next = attempt.next_path.clone();
    if attempt.provider != provider.name {
        return Ok(Err(refuse(
            StatusCode::BAD_REQUEST,
            &next,
            "This sign-in was started with another provider: start again.",
        )));
    }
    match query.state.as_deref() {
        Some(state) if state.len() <= MAX_PARAM && tokens::tokens_match(state, &attempt.state) => {}
        _ => {
            return Ok(Err(refuse(
                StatusCode::BAD_REQUEST,
                &next,
                "The provider's answer does not carry this sign-in's state (a forged or \
                 replayed answer?): start again.",
            )))
        }
    }
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or("");
        return Ok(Err(refuse(
            StatusCode::UNAUTHORIZED,
            &next,
            format!("{} did not sign you in: {error} {detail}", provider.label)
                .trim()
                .to_string(),
        )));
    }
    let Some(code) = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= MAX_PARAM)
    else {
        return Ok(Err(refuse(
            StatusCode::BAD_REQUEST,
            &next,
            "The provider's answer carries no code.",
        )));
    };
    let (account, hint, groups) =
        match identify(sign_in, provider, code, &attempt.verifier, &attempt.nonce).await {
            Ok(who) => who,
            Err(message) => {
                return Ok(Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    &next,
                    format!("{} did not sign you in: {message}", provider.label),
                )))
            }
        };
    let (user, created) = people::find_or_create(store, &account, &hint).await?;
    if user.disabled_at.is_some() {
        return Ok(Err(refuse(
            StatusCode::FORBIDDEN,
            &next,
            format!("The user {} is disabled: ask an admin.", user.name),
        )));
    }
    let changes = match &groups {
        Some(groups) => Some(people::follow_groups(store, user.id, groups).await?),
        None => None,
    };
    // Roles follow the forge: a forge sign-in learns this person's roles now, not at the
    // next refresh (a forge that cannot answer leaves them as they were).
    if let (Some(roles), Kind::Forge { .. }) = (&sign_in.0.forge_roles, &provider.kind) {
        let permissions = plue_forge::permission::Permissions::unremembered();
        let refreshed = plue_core::forge_roles::refresh(
            &roles.executor,
            &permissions,
            Some(user.id),
            roles.every,
        )
        .await?;
        tracing::info!(user = %user.name, ?refreshed, "forge roles learnt at sign-in");
    }
    store
        .audit(&Audit {
            user_id: Some(user.id),
            actor: &user.name,
            action: "user.sign_in",
            repo_id: None,
            run_id: None,
            detail: json!({
                "provider": provider.name,
                "account": account.describe(),
                "created": created,
                "cli": attempt.cli.is_some(),
                "groups_added": changes.as_ref().map(|c| &c.added),
                "groups_removed": changes.as_ref().map(|c| &c.removed),
            }),
        })
        .await?;
    if let Some(cli) = &attempt.cli {
        let code = pkce::random()?;
        store
            .create_cli_code(
                &tokens::hash_token(&code),
                user.id,
                provider.name,
                &cli.challenge,
                now_ms() + CLI_CODE_TTL_MS,
            )
            .await?;
        let mut back = Url::parse(&cli.redirect)?;
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &cli.state);
        return Ok(Ok(Redirect::to(back.as_str()).into_response()));
    }
    // The session's token: its value is never shown; it ends with the session.
    let token = tokens::new_token()?;
    let token_name = format!("sign-in with {}", provider.label);
    store
        .create_user_token(&NewToken {
            user_id: user.id,
            name: &token_name,
            token_hash: &tokens::hash_token(&token),
            max_role: None,
            repos: None,
            expires_at: Some(now_ms() + SESSION_TTL_MS),
        })
        .await?;
    let Some((session, _)) = sign_in.0.resolver.open_session(&token).await? else {
        return Ok(Err(refuse(
            StatusCode::FORBIDDEN,
            &next,
            format!("The user {} cannot sign in.", user.name),
        )));
    };
    // A page, not a redirect: the session's SameSite=Strict cookies are sent only on a
    // navigation this site starts, not at the end of the provider's redirects.
    let mut response = (StatusCode::OK, Html(signed_in_page(&user.name, &next))).into_response();
    for value in session_cookies(&session, sign_in.0.secure_cookies)? {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(Ok(response))
}

/// Who the code is: the account, a name for a new user, the groups claim (when one is
/// configured). An error says why in words for the person.
async fn identify(
    sign_in: &SignIn,
    provider: &Provider,
    code: &str,
    verifier: &str,
    nonce: &str,
) -> Result<(Account, String, Option<Vec<String>>), String> {
    let http = &sign_in.0.http;
    let redirect_uri = sign_in.redirect_uri(provider);
    match &provider.kind {
        Kind::Oidc {
            discovered,
            groups_claim,
            ..
        } => {
            let auth = if discovered.basic_auth {
                ClientAuth::Basic
            } else {
                ClientAuth::Post
            };
            let tokens = oauth::exchange(
                http,
                &discovered.token_endpoint,
                auth,
                &provider.client_id,
                &provider.client_secret.0,
                code,
                &redirect_uri,
                verifier,
            )
            .await?;
            let id_token = tokens
                .id_token
                .ok_or("the provider's answer has no ID token")?;
            let identity = discovered
                .verify(
                    http,
                    &id_token,
                    &provider.client_id,
                    nonce,
                    groups_claim.as_deref(),
                )
                .await?;
            let hint = identity
                .preferred_username
                .clone()
                .unwrap_or_else(|| "user".to_string());
            Ok((
                Account::Subject {
                    issuer: discovered.issuer.clone(),
                    subject: identity.subject,
                },
                hint,
                identity.groups,
            ))
        }
        Kind::Forge {
            forge, token, api, ..
        } => {
            let tokens = oauth::exchange(
                http,
                token,
                ClientAuth::Post,
                &provider.client_id,
                &provider.client_secret.0,
                code,
                &redirect_uri,
                verifier,
            )
            .await?;
            let access = tokens
                .access_token
                .ok_or("the provider's answer has no access token")?;
            let login = oauth::forge_login(http, api, &access).await?;
            Ok((
                Account::Forge {
                    forge,
                    login: login.clone(),
                },
                login,
                None,
            ))
        }
    }
}

/// The page a signed-in browser gets: on to `next` (a local path) at once.
fn signed_in_page(user: &str, next: &str) -> String {
    let next = escape(next);
    let user = escape(user);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={next}\"><title>Signed in</title>\
         <link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\"></head>\
         <body><p id=\"signed-in\">Signed in as {user}. <a href=\"{next}\">Continue</a>.</p>\
         </body></html>\n"
    )
}

/// Text for an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /sign-in/providers`: the providers, for `plue login` (`[{name, label, href}]`).
pub(super) async fn providers(State(sign_in): State<SignIn>) -> Json<Vec<super::Link>> {
    Json(sign_in.links())
}

#[cfg(test)]
mod tests;
