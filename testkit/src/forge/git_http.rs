//! The fake forge's git remote: `git http-backend` run as CGI for each request under
//! `/{owner}/{name}.git/`, so clients speak git's real smart HTTP protocol (v0 and v2).
//!
//! Invariants: fetches are open (a public repository); a push (`service=git-receive-pack`
//! and `POST …/git-receive-pack`) needs the forge's token — `Authorization: Basic` with the
//! token as password (GitHub's `x-access-token:<token>`; Gitea takes the token as password
//! or as user name) or `Bearer`/`token <token>` — and is answered `401` with a
//! `WWW-Authenticate` challenge otherwise. The backend runs with a cleared environment.

use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;

use super::query::{is_name, parse_query};
use super::{lock, SharedState};

pub(crate) async fn serve(
    shared: &SharedState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (root, token, bot) = {
        let shared = lock(shared);
        (
            shared.root.clone(),
            shared.token.clone(),
            shared.bot.clone(),
        )
    };
    let Some(repo) = repository(path) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if !lock(shared).repos.contains_key(&repo) {
        return plain(StatusCode::NOT_FOUND, "repository not found");
    }
    let push = path.ends_with("/git-receive-pack")
        || parse_query(query)
            .iter()
            .any(|(k, v)| k == "service" && v == "git-receive-pack");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    // The GitHub App mode decides alone when it is on.
    let app_gate = super::app::git_gate(shared, &repo, push, header("authorization").as_deref());
    if let Some(Err(refused)) = app_gate {
        return refused;
    }
    if app_gate.is_none() && push && !token_given(header("authorization").as_deref(), &token) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"fake-forge\"")
            .body(Body::from("authentication required to push\n"))
            .expect("a response");
    }
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if push {
        command.env("REMOTE_USER", &bot);
    }
    if let Some(value) = header("content-type") {
        command.env("CONTENT_TYPE", value);
    }
    if let Some(value) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", value);
    }
    if let Some(value) = header("git-protocol") {
        command.env("GIT_PROTOCOL", value);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("git: {e}")),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("git: {e}")),
    };
    let _ = writer.await;
    cgi_response(&output.stdout).unwrap_or_else(|| {
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "git http-backend: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )
    })
}

/// `owner/name` of `/{owner}/{name}.git/…`.
fn repository(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let owner = parts.next()?;
    let name = parts.next()?.strip_suffix(".git")?;
    parts.next()?;
    (is_name(owner) && is_name(name)).then(|| format!("{owner}/{name}"))
}

fn token_given(authorization: Option<&str>, token: &str) -> bool {
    let Some((scheme, credential)) = authorization.and_then(|v| v.split_once(' ')) else {
        return false;
    };
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => base64::engine::general_purpose::STANDARD
            .decode(credential.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .is_some_and(|pair| {
                let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
                password == token || (password.is_empty() && user == token)
            }),
        "bearer" | "token" => credential.trim() == token,
        _ => false,
    }
}

/// A CGI answer (`Status:` and other headers, a blank line, the body) as a response.
fn cgi_response(stdout: &[u8]) -> Option<Response> {
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })?;
    let head = std::str::from_utf8(&stdout[..split.0]).ok()?;
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next()?.parse().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .status(status)
        .body(Body::from(stdout[split.1..].to_vec()))
        .ok()
}

fn plain(status: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Body::from(format!("{text}\n")))
        .expect("a response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_take_the_token_in_any_of_the_forms_git_sends_it() {
        let basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(token_given(Some(&basic("x-access-token:t0k")), "t0k"));
        assert!(token_given(Some(&basic("t0k:")), "t0k"));
        assert!(token_given(Some("token t0k"), "t0k"));
        assert!(token_given(Some("Bearer t0k"), "t0k"));
        assert!(!token_given(Some(&basic("x-access-token:nope")), "t0k"));
        assert!(!token_given(Some(&basic("t0k:wrong")), "t0k"));
        assert!(!token_given(None, "t0k"));
        assert_eq!(repository("/a/b.git/info/refs").as_deref(), Some("a/b"));
        assert_eq!(repository("/a/../b.git/info/refs"), None);
        assert_eq!(repository("/a/b/info/refs"), None);
    }
}
