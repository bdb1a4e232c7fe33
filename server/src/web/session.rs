//! Who is looking: the dashboard's sign-in. A browser cannot send `Authorization: Bearer`
//! on a page load, so the user signs in once with an API token (the admin token or one made
//! with `plue token create`); the engine opens a server-side session for it
//! ([`Resolver::open_session`]) and the browser keeps only the session's random id.
//!
//! Invariants:
//! - The `plue_session` cookie holds a random session id, never the token nor anything
//!   derived from it; the store keeps only the id's hash. It is `HttpOnly; SameSite=Strict;
//!   Path=/` (and `Secure` when the engine's public URL is https) and lives
//!   [`SESSION_TTL_MS`], as the session row does.
//! - A session is as valid as its token: revoking the token, its expiry, disabling its
//!   user or signing out ([`Resolver::close_session`]) ends it; such a cookie is anonymous.
//!   A `plue_token` cookie (the raw token, before sessions) is never read, and cleared.
//! - Every page resolves its [`Caller`] here and asks it, as the API does: a thing the
//!   caller may not read is the same 404 as a missing one (the sign-in page when
//!   anonymous). An engine without an admin token has no users: everyone is
//!   [`Caller::Embedded`].
//! - Every dashboard write (sign-out, cancel, re-run, dispatch) is a form POST carrying the
//!   session's CSRF token, compared in constant time with the `plue_csrf` cookie (double
//!   submit), and a POST whose `Origin` names another site is refused before anything else.

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

pub(super) use super::chrome::Chrome;
use plue_store::{RunRow, Store};
use plue_vault::tokens;

use super::error::{ErrorPage, SignInPrompt, WebError, WebResult};
use super::{render, Web};
use crate::access::{Caller, Role, SESSION_TTL_MS};
use crate::http_error::ApiError;

const SESSION_COOKIE: &str = "plue_session";
/// The cookie that held the raw token before sessions: ignored, and cleared.
const LEGACY_TOKEN_COOKIE: &str = "plue_token";
const CSRF_COOKIE: &str = "plue_csrf";
/// Longest token accepted at sign-in (Plue's are 64 hex digits).
const MAX_TOKEN: usize = 512;

/// Who the request is, from its cookies.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// Who asks: from the session cookie (anonymous without a live session).
    pub(super) caller: Caller,
    /// The form token of the session; forms that write carry it.
    pub(super) csrf: Option<String>,
}

impl Session {
    /// Reads the cookies and resolves the caller of the session cookie.
    pub(super) async fn load(web: &Web, headers: &HeaderMap) -> WebResult<Session> {
        let resolver = web.resolver();
        let caller = if !resolver.enforced() {
            Caller::Embedded
        } else {
            match cookie(headers, SESSION_COOKIE) {
                Some(id) => resolver
                    .from_session(id)
                    .await?
                    .unwrap_or(Caller::Anonymous),
                None => Caller::Anonymous,
            }
        };
        Ok(Session {
            caller,
            csrf: cookie(headers, CSRF_COOKIE).map(str::to_string),
        })
    }

    pub(super) fn signed_in(&self) -> bool {
        self.csrf.is_some() && !matches!(self.caller, Caller::Anonymous)
    }

    pub(super) fn chrome(&self, path: &str) -> Chrome {
        let signed_in = self.signed_in();
        Chrome {
            signed_in,
            user: self.caller.user().map(|user| user.name.clone()),
            csrf: self.csrf.clone().filter(|_| signed_in),
            path: path.to_string(),
            // Only an engine with users has anonymous callers.
            signed_out: matches!(self.caller, Caller::Anonymous),
        }
    }

    /// Passes for a signed-in caller (installation-wide pages: the runners); the sign-in
    /// page for the anonymous.
    pub(super) fn require_signed_in(&self, path: &str) -> WebResult<()> {
        self.caller.require_signed_in().map_err(|e| denied(e, path))
    }

    /// Whether the caller acts with at least `role` on `repo_id` (`None`: a local run).
    pub(super) async fn may(
        &self,
        store: &Store,
        repo_id: Option<i64>,
        role: Role,
    ) -> WebResult<bool> {
        match self.caller.require_repo(store, repo_id, role).await {
            Ok(()) => Ok(true),
            Err(ApiError::Client(..)) => Ok(false),
            Err(ApiError::Internal(e)) => Err(WebError::Internal(e)),
        }
    }

    /// Checks a write: same-site `Origin` (when the browser sends one) and the form's CSRF
    /// token against the session's.
    pub(super) fn check_write(&self, headers: &HeaderMap, form_csrf: &str) -> WebResult<()> {
        check_form(headers, self.csrf.as_deref(), form_csrf)
    }
}

/// The session and run `run_id`, when the session's caller may read it ([`denied`], for
/// the page `path`, when not).
pub(super) async fn readable_run(
    web: &Web,
    headers: &HeaderMap,
    run_id: i64,
    path: &str,
) -> WebResult<(Session, RunRow)> {
    let session = Session::load(web, headers).await?;
    let run = session
        .caller
        .visible_run(web.store(), run_id, Role::Reader)
        .await
        .map_err(|e| denied(e, path))?;
    Ok((session, run))
}

/// The dashboard's answer to an access check that failed: the sign-in page (returning to
/// `path`) for the anonymous, else the API's status and message (404 hides the thing).
pub(super) fn denied(error: ApiError, path: &str) -> WebError {
    match error {
        ApiError::Client(StatusCode::UNAUTHORIZED, _) => WebError::SignIn {
            next: local_path(path),
            message: "Sign in to see this page.".into(),
        },
        ApiError::Client(StatusCode::NOT_FOUND, message) => {
            let mut message = message;
            if let Some(first) = message.get(..1) {
                message = first.to_uppercase() + &message[1..];
            }
            WebError::not_found(format!("{message}."))
        }
        ApiError::Client(status, message) => WebError::Client(status, message),
        ApiError::Internal(e) => WebError::Internal(e),
    }
}

/// Same-site `Origin` and the form's CSRF token matching the cookie's.
fn check_form(headers: &HeaderMap, expected: Option<&str>, form_csrf: &str) -> WebResult<()> {
    check_origin(headers)?;
    match expected {
        Some(expected) if !form_csrf.is_empty() && tokens::tokens_match(form_csrf, expected) => {
            Ok(())
        }
        _ => Err(WebError::forbidden(
            "This form is stale or came from another site (CSRF check failed): reload the page and try again.",
        )),
    }
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// A POST must come from this site: a browser names the page's origin in `Origin`, which
/// must have the request's `Host`. Requests without `Origin` (not a browser) pass: they
/// carry no ambient cookie unless someone gave it to them.
fn check_origin(headers: &HeaderMap) -> WebResult<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(WebError::forbidden(
            "This request came from another site and was refused.",
        )),
    }
}

/// A path to return to after sign-in: only a local absolute path (never `//host` or a URL).
pub(crate) fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control());
    if ok {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// A `Set-Cookie` value: `Max-Age` seconds (0 clears it), `Secure` on an https engine.
fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("plue_invalid=1"))
}

/// The middleware clearing a `plue_token` cookie (the raw token, from before sessions)
/// wherever a browser still sends one.
pub(super) async fn clear_legacy_cookie(
    State(web): State<Web>,
    request: Request,
    next: Next,
) -> Response {
    let legacy = cookie(request.headers(), LEGACY_TOKEN_COOKIE).is_some();
    let mut response = next.run(request).await;
    if legacy {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LEGACY_TOKEN_COOKIE, "", 0, web.secure_cookies),
        );
    }
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

#[derive(Serialize)]
struct LoginPage<'a> {
    next: &'a str,
    message: &'a str,
    signed_in: bool,
    /// The sign-in providers (`crate::sign_in`), each linked with `next`.
    providers: Vec<ProviderLink>,
}

#[derive(Serialize)]
struct ProviderLink {
    label: String,
    href: String,
}

fn provider_links(providers: &[super::SignInLink], next: &str) -> Vec<ProviderLink> {
    providers
        .iter()
        .map(|p| ProviderLink {
            label: p.label.clone(),
            href: format!("{}?next={}", p.href, crate::percent::encode(next)),
        })
        .collect()
}

/// The sign-in page answered with `status` and `message` (a refused sign-in of
/// `crate::sign_in`), linking the providers.
pub(crate) fn sign_in_page(
    status: StatusCode,
    next: &str,
    message: &str,
    providers: &[super::SignInLink],
) -> Response {
    let next = local_path(next);
    let page = render::page(
        "login.html",
        &LoginPage {
            next: &next,
            message,
            signed_in: false,
            providers: provider_links(providers, &next),
        },
    );
    match page {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("dashboard: rendering the sign-in page: {e:#}");
            (status, message.to_string()).into_response()
        }
    }
}

/// The cookies of a session `crate::sign_in` opened: its id and a new form token, as
/// `POST /login` sets them.
pub(crate) fn session_cookies(id: &str, secure: bool) -> anyhow::Result<[HeaderValue; 2]> {
    let csrf = tokens::new_token()?;
    let age = SESSION_TTL_MS / 1000;
    Ok([
        set_cookie(SESSION_COOKIE, id, age, secure),
        set_cookie(CSRF_COOKIE, &csrf, age, secure),
    ])
}

/// `GET /login`: the sign-in form.
pub(super) async fn login_page(
    State(web): State<Web>,
    headers: HeaderMap,
    query: axum::extract::Query<NextQuery>,
) -> WebResult<Html<String>> {
    let next = local_path(query.next.as_deref().unwrap_or("/"));
    let signed_in = Session::load(&web, &headers).await?.signed_in();
    let message = if web.resolver().enforced() {
        ""
    } else {
        "This engine checks no tokens: sign in with an empty token to get a session for cancel and re-run."
    };
    Ok(Html(render::page(
        "login.html",
        &LoginPage {
            next: &next,
            message,
            signed_in,
            providers: provider_links(&web.sign_in_links, &next),
        },
    )?))
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: opens a session with the token (checked as a bearer token is) and gives
/// the browser the session's id.
pub(super) async fn login(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> WebResult<Response> {
    check_origin(&headers)?;
    let next = local_path(&form.next);
    let token = form.token.trim();
    let resolver = web.resolver();
    let session = match resolver.enforced() {
        false => None,
        true => {
            let opened = match token.len() {
                1..=MAX_TOKEN => resolver.open_session(token).await?,
                _ => None,
            };
            let Some((id, _caller)) = opened else {
                return Err(WebError::SignIn {
                    next,
                    message: "That token is not valid here.".into(),
                });
            };
            Some(id)
        }
    };
    let csrf = tokens::new_token()?;
    let age = SESSION_TTL_MS / 1000;
    let secure = web.secure_cookies;
    // 303 See Other: the browser follows with a GET.
    let mut response = Redirect::to(&next).into_response();
    let cookies = response.headers_mut();
    if let Some(id) = session {
        cookies.append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, &id, age, secure),
        );
    }
    cookies.append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, &csrf, age, secure),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// `POST /logout`: ends the session in the store and forgets its cookies.
pub(super) async fn logout(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    check_form(&headers, cookie(&headers, CSRF_COOKIE), &form.csrf)?;
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        web.resolver().close_session(id).await?;
    }
    let secure = web.secure_cookies;
    let mut response = Redirect::to("/").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure),
    );
    cookies.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, "", 0, secure));
    Ok(response)
}

/// The middleware giving error pages the header's sign-in corner: a response carrying an
/// [`ErrorPage`] is rendered again with the chrome of the request's session.
pub(super) async fn with_chrome(State(web): State<Web>, request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut response = next.run(request).await;
    // A sign-in page: again with the providers' links, when there are providers.
    if let Some(prompt) = response.extensions_mut().remove::<SignInPrompt>() {
        let links = &web.sign_in_links;
        if links.is_empty() {
            return response;
        }
        let mut fresh = sign_in_page(response.status(), &prompt.next, &prompt.message, links);
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                fresh.headers_mut().append(name.clone(), value.clone());
            }
        }
        return fresh;
    }
    let Some(mut page) = response.extensions_mut().remove::<ErrorPage>() else {
        return response;
    };
    match Session::load(&web, &headers).await {
        Ok(session) => {
            page.chrome = Some(session.chrome(&path));
            let mut fresh = page.respond();
            // Headers the handler set (cookies, cache rules) stay.
            for (name, value) in response.headers() {
                if name != axum::http::header::CONTENT_LENGTH
                    && name != axum::http::header::CONTENT_TYPE
                {
                    fresh.headers_mut().append(name.clone(), value.clone());
                }
            }
            fresh.extensions_mut().remove::<ErrorPage>();
            fresh
        }
        // The session could not be read: the page as it was, without the corner.
        Err(_) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_never_redirects_off_site() {
        assert_eq!(local_path("/runs/4"), "/runs/4");
        assert_eq!(local_path("/?status=failed"), "/?status=failed");
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/runs\n/4",
        ] {
            assert_eq!(local_path(hostile), "/", "{hostile:?}");
        }
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8600"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_origin(&headers).is_err());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8600"),
        );
        assert!(check_origin(&headers).is_ok());
    }

    #[test]
    fn a_forged_form_without_the_session_token_is_refused() {
        let session = Session {
            caller: Caller::Embedded,
            csrf: Some("right".into()),
        };
        let headers = HeaderMap::new();
        assert!(session.check_write(&headers, "wrong").is_err());
        assert!(session.check_write(&headers, "").is_err());
        let none = Session {
            caller: Caller::Embedded,
            csrf: None,
        };
        assert!(none.check_write(&headers, "").is_err());
        assert!(session.check_write(&headers, "right").is_ok());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xplue_session=no; plue_session=yes; plue_csrf="),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("yes"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), None);
    }

    #[test]
    fn cookies_are_secure_on_an_https_engine_and_expire() {
        let plain = set_cookie(SESSION_COOKIE, "abc", 43200, false);
        let plain = plain.to_str().unwrap();
        assert!(
            plain.contains("HttpOnly; SameSite=Strict; Max-Age=43200"),
            "{plain}"
        );
        assert!(!plain.contains("Secure"), "{plain}");
        let secure = set_cookie(SESSION_COOKIE, "abc", 43200, true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }
}
