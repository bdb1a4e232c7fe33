//! Who is looking: the dashboard's sign-in. A browser cannot send `Authorization: Bearer`
//! on a page load, so the user signs in once with an API token (the admin token or one made
//! with `plue token create`) and the engine keeps it in a cookie.
//!
//! Invariants:
//! - The token cookie is `HttpOnly; SameSite=Strict`: no script reads it, no other site's
//!   request carries it. It is checked exactly like a bearer token ([`Auth::check`]).
//! - Every dashboard write (sign-out, cancel, re-run) is a form POST carrying the session's
//!   CSRF token, compared in constant time with the `plue_csrf` cookie (double submit), and
//!   a POST whose `Origin` names another site is refused before anything else.
//! - With `--private-reads`, every page except sign-in and the assets needs a valid token.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::error::{WebError, WebResult};
use super::{render, Web};
use crate::tokens;

const TOKEN_COOKIE: &str = "plue_token";
const CSRF_COOKIE: &str = "plue_csrf";

/// What the request's cookies say about the user.
#[derive(Debug, Clone, Default)]
pub(super) struct Session {
    /// The API token, when signed in (and still valid when checked by [`Session::load`]).
    pub(super) token: Option<String>,
    /// The form token of the session; forms that write carry it.
    pub(super) csrf: Option<String>,
}

/// What every page's header shows.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Chrome {
    pub(super) signed_in: bool,
    /// The session's form token (writes are offered only with one).
    pub(super) csrf: Option<String>,
    /// Where sign-in returns to.
    pub(super) path: String,
}

impl Session {
    /// Reads the cookies and checks the token; with private reads, a request without a
    /// valid token gets the sign-in page.
    pub(super) async fn load(web: &Web, headers: &HeaderMap, path: &str) -> WebResult<Session> {
        let mut session = Session {
            token: cookie(headers, TOKEN_COOKIE).map(str::to_string),
            csrf: cookie(headers, CSRF_COOKIE).map(str::to_string),
        };
        if let Some(token) = &session.token {
            if !token_valid(web, token).await? {
                session.token = None;
            }
        }
        let signed_in = session.token.is_some() || !web.auth().enforced();
        if web.private_reads && !signed_in {
            return Err(WebError::SignIn {
                next: path.to_string(),
                message: "This engine's pages are private: sign in with an API token.".into(),
            });
        }
        Ok(session)
    }

    pub(super) fn chrome(&self, web: &Web, path: &str) -> Chrome {
        let signed_in = self.csrf.is_some() && (self.token.is_some() || !web.auth().enforced());
        Chrome {
            signed_in,
            csrf: self.csrf.clone().filter(|_| signed_in),
            path: path.to_string(),
        }
    }

    /// Checks a write: same-site `Origin` (when the browser sends one) and the form's CSRF
    /// token against the session's.
    pub(super) fn check_write(&self, headers: &HeaderMap, form_csrf: &str) -> WebResult<()> {
        check_origin(headers)?;
        match &self.csrf {
            Some(expected) if !form_csrf.is_empty() && tokens::tokens_match(form_csrf, expected) => {
                Ok(())
            }
            _ => Err(WebError::forbidden(
                "This form is stale or came from another site (CSRF check failed): reload the page and try again.",
            )),
        }
    }
}

async fn token_valid(web: &Web, token: &str) -> WebResult<bool> {
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return Ok(false);
    };
    headers.insert(header::AUTHORIZATION, value);
    match web.auth().check(&headers).await {
        Ok(()) => Ok(true),
        Err(crate::http_error::ApiError::Internal(e)) => Err(WebError::Internal(e)),
        Err(crate::http_error::ApiError::Client(..)) => Ok(false),
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
pub(super) fn local_path(next: &str) -> String {
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

/// A token fits in a cookie only if it has no separator, quote or space (tokens made by
/// Plue are hex).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("plue_invalid=1"))
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
}

/// `GET /login`: the sign-in form.
pub(super) async fn login_page(
    State(web): State<Web>,
    headers: HeaderMap,
    query: axum::extract::Query<NextQuery>,
) -> WebResult<Html<String>> {
    let next = local_path(query.next.as_deref().unwrap_or("/"));
    let signed_in = cookie(&headers, TOKEN_COOKIE).is_some();
    let message = if web.auth().enforced() {
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

/// `POST /login`: checks the token like a bearer token and keeps it in the session cookie.
pub(super) async fn login(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> WebResult<Response> {
    check_origin(&headers)?;
    let next = local_path(&form.next);
    let token = form.token.trim();
    let enforced = web.auth().enforced();
    if enforced && !(cookie_safe(token) && token_valid(&web, token).await?) {
        return Err(WebError::SignIn {
            next,
            message: "That token is not valid here.".into(),
        });
    }
    let csrf = tokens::new_token()?;
    // 303 See Other: the browser follows with a GET.
    let mut response = Redirect::to(&next).into_response();
    let cookies = response.headers_mut();
    if enforced {
        cookies.append(header::SET_COOKIE, set_cookie(TOKEN_COOKIE, token, None));
    }
    cookies.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, &csrf, None));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// `POST /logout`: forgets the session.
pub(super) async fn logout(headers: HeaderMap, Form(form): Form<CsrfForm>) -> WebResult<Response> {
    let session = Session {
        token: None,
        csrf: cookie(&headers, CSRF_COOKIE).map(str::to_string),
    };
    session.check_write(&headers, &form.csrf)?;
    let mut response = Redirect::to("/").into_response();
    let cookies = response.headers_mut();
    cookies.append(header::SET_COOKIE, set_cookie(TOKEN_COOKIE, "", Some(0)));
    cookies.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, "", Some(0)));
    Ok(response)
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
            token: Some("t".into()),
            csrf: Some("right".into()),
        };
        let headers = HeaderMap::new();
        assert!(session.check_write(&headers, "wrong").is_err());
        assert!(session.check_write(&headers, "").is_err());
        assert!(Session::default().check_write(&headers, "").is_err());
        assert!(session.check_write(&headers, "right").is_ok());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xplue_token=no; plue_token=yes; plue_csrf="),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE), Some("yes"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), None);
    }
}
