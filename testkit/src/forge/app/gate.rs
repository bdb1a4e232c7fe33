//! What the App mode lets through: the App's JWT on its own endpoints (answered here), an
//! installation token on everything else — unexpired, for the repository asked about, and
//! with the permission the request needs ([`needed`]). Personal tokens are refused.
//!
//! Invariants: a request the App mode does not let through is answered here and reaches no
//! handler; without the App mode both gates say `None` and the forge checks its personal
//! token as before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::super::answer::Answer;
use super::super::query::percent_decode;
use super::super::{lock, Recorded, Shared, SharedState};
use super::revoke::{self, Presented};
use super::{json as shapes, AppMode, InstallationToken};

/// How far in the future a JWT's `exp` may be after its `iat` (GitHub: 10 minutes).
const MAX_JWT_LIFETIME: u64 = 600;

fn answer(status: u16, message: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        }),
    )
}

/// The credential of an `Authorization` header: `Bearer`/`token <credential>`, or Basic
/// `user:password` (the password, or the user when the password is empty).
fn credential(authorization: Option<&str>) -> Option<String> {
    let (scheme, value) = authorization?.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => Some(value.trim().to_string()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':')?;
            Some(if password.is_empty() { user } else { password }.to_string())
        }
        _ => None,
    }
}

/// The permission (and level) a request of `method` on a repository's `tail` needs.
pub(crate) fn needed(method: &str, tail: &[&str]) -> (&'static str, &'static str) {
    let read = method == "GET" || method == "HEAD";
    let level = if read { "read" } else { "write" };
    if tail.contains(&"check-runs") || tail.contains(&"check-suites") {
        return ("checks", level);
    }
    match tail.first().copied() {
        Some("pulls") => ("pull_requests", level),
        Some("issues") => ("issues", level),
        Some("statuses") => ("statuses", level),
        Some("commits") if tail.last() == Some(&"status") || tail.last() == Some(&"statuses") => {
            ("statuses", "read")
        }
        Some("collaborators") => ("metadata", "read"),
        Some("contents" | "git" | "branches" | "commits") => ("contents", level),
        _ if read => ("metadata", "read"),
        _ => ("administration", "write"),
    }
}

fn grants(permissions: &BTreeMap<String, String>, (name, level): (&str, &str)) -> bool {
    match permissions.get(name).map(String::as_str) {
        Some("write") => true,
        Some("read") => level == "read" || name == "metadata",
        _ => name == "metadata" && level == "read",
    }
}

/// The installation token `given`, presented at `presented` for `request`, if the App
/// handed it out, it has not expired and is not revoked (module `revoke`).
fn valid_token<'a>(
    app: &'a mut AppMode,
    given: &str,
    presented: Presented,
    request: &str,
) -> Result<&'a InstallationToken, Answer> {
    let index = app
        .tokens
        .iter()
        .position(|t| t.token == given)
        .ok_or_else(|| answer(401, "Bad credentials"))?;
    if Instant::now() >= app.tokens[index].expires
        || revoke::refused_at_use(app, index, presented, request)
    {
        return Err(answer(401, "Bad credentials"));
    }
    Ok(&app.tokens[index])
}

/// The App mode's verdict on an API request (`None`: the App mode is off). `Err` is the
/// answer to send now: an App endpoint's, or a refusal.
pub(crate) fn api_gate(
    shared: &SharedState,
    method: &str,
    path: &str,
    request: &Recorded,
) -> Option<Result<(), Answer>> {
    let mut guard = lock(shared);
    guard.app.as_ref()?;
    let rest = path.strip_prefix(guard.flavor.api_prefix()).unwrap_or(path);
    let segments: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let given = credential(request.header("authorization"));
    let Some(given) = given else {
        return Some(Err(answer(401, "Requires authentication")));
    };
    let as_app = matches!(
        (method, segments.as_slice()),
        ("GET", ["app"])
            | ("POST", ["app", "installations", _, "access_tokens"])
            | ("GET", ["repos", _, _, "installation"])
    );
    if as_app {
        return Some(Err(as_the_app(
            &mut guard,
            method,
            &segments,
            &given,
            &request.body,
        )));
    }
    let app = guard.app.as_mut()?;
    let request = format!("{method} {path}");
    let token = match valid_token(app, &given, Presented::Api, &request) {
        Ok(token) => token,
        Err(refused) => return Some(Err(refused)),
    };
    match segments.as_slice() {
        ["user"] => Some(Err(answer(403, "Resource not accessible by integration"))),
        ["repos", _, name, tail @ ..] => {
            if !token.repositories.contains(*name) {
                return Some(Err(answer(404, "Not Found")));
            }
            if !grants(&token.permissions, needed(method, tail)) {
                return Some(Err(answer(403, "Resource not accessible by integration")));
            }
            Some(Ok(()))
        }
        _ => Some(Err(answer(403, "Resource not accessible by integration"))),
    }
}

/// The App mode's verdict on a git request for `repo` (`None`: the App mode is off):
/// fetches need `contents: read`, pushes `contents: write`, of an unexpired installation
/// token for `repo`.
pub(crate) fn git_gate(
    shared: &SharedState,
    repo: &str,
    push: bool,
    authorization: Option<&str>,
) -> Option<Result<(), Response>> {
    let mut guard = lock(shared);
    let app = guard.app.as_mut()?;
    let refuse = |status: StatusCode, text: &str| {
        Response::builder()
            .status(status)
            .header("www-authenticate", "Basic realm=\"GitHub\"")
            .body(Body::from(format!("{text}\n")))
            .expect("a response")
    };
    let Some(given) = credential(authorization) else {
        return Some(Err(refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required",
        )));
    };
    let (presented, request) = match push {
        true => (Presented::GitPush, format!("git push {repo}")),
        false => (Presented::GitFetch, format!("git fetch {repo}")),
    };
    let Ok(token) = valid_token(app, &given, presented, &request) else {
        return Some(Err(refuse(StatusCode::UNAUTHORIZED, "invalid credentials")));
    };
    let name = repo.split_once('/').map_or(repo, |(_, name)| name);
    let level = if push { "write" } else { "read" };
    if !token.repositories.contains(name) || !grants(&token.permissions, ("contents", level)) {
        return Some(Err(refuse(
            StatusCode::FORBIDDEN,
            "Permission denied to the App's installation token",
        )));
    }
    Some(Ok(()))
}

/// The claims of `jwt` if the App signed it and it is valid now.
fn verified(app: &AppMode, jwt: &str) -> Result<Value, Answer> {
    let undecodable = || answer(401, "A JSON web token could not be decoded");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(app.config.public_key_pem.as_bytes())
        .map_err(|_| undecodable())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    // `iss` may be a number or a string (GitHub takes both): checked below.
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|_| undecodable())?
        .claims;
    let iss = match &claims["iss"] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    };
    if iss != app.config.id.to_string() {
        return Err(answer(401, "A JSON web token could not be decoded"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(u64::MAX),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if iat > now + 1 {
        return Err(answer(
            401,
            "'Issued at' claim ('iat') must be an Integer representing a time in the past",
        ));
    }
    if exp <= now || exp.saturating_sub(iat) > MAX_JWT_LIFETIME || exp > now + MAX_JWT_LIFETIME {
        return Err(answer(
            401,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(claims)
}

/// Answers one of the App's own endpoints.
fn as_the_app(
    shared: &mut Shared,
    method: &str,
    segments: &[&str],
    jwt: &str,
    body: &Value,
) -> Answer {
    let url = shared.url.clone();
    let repos: Vec<(String, u64)> = shared
        .repos
        .keys()
        .map(|r| (r.clone(), shared.repo_id(r)))
        .collect();
    let Some(app) = shared.app.as_mut() else {
        return answer(404, "Not Found");
    };
    if let Err(refused) = verified(app, jwt) {
        return refused;
    }
    match (method, segments) {
        ("GET", ["app"]) => Answer::json(200, shapes::app(&url, &app.config)),
        ("GET", ["repos", owner, name, "installation"]) => {
            let repo = format!("{owner}/{name}");
            if !repos.iter().any(|(r, _)| *r == repo) || app.uninstalled.contains(&repo) {
                return answer(404, "Not Found");
            }
            Answer::json(
                200,
                shapes::installation(&url, &app.config, app.installation_id, owner),
            )
        }
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            if id.parse::<u64>().ok() != Some(app.installation_id) {
                return answer(404, "Not Found");
            }
            if let Some(status) = app.refuse_tokens {
                return answer(status, "This installation has been suspended");
            }
            mint(app, &url, &repos, body)
        }
        _ => answer(404, "Not Found"),
    }
}

/// A token for the body's `repositories` (names; default: every installed repository)
/// and `permissions` (default: all the App's), each within the installation's. `repos`
/// are the forge's repositories with the ids their names have now.
pub(super) fn mint(app: &mut AppMode, url: &str, repos: &[(String, u64)], body: &Value) -> Answer {
    let installed: Vec<&String> = repos
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !app.uninstalled.contains(*r))
        .collect();
    let wanted: Vec<String> = match body.get("repositories") {
        None | Some(Value::Null) => installed.iter().map(|r| r.to_string()).collect(),
        Some(Value::Array(names)) => {
            let mut full = Vec::new();
            for name in names {
                let found = name.as_str().and_then(|name| {
                    installed
                        .iter()
                        .find(|r| r.split_once('/').map(|(_, n)| n) == Some(name))
                });
                match found {
                    Some(repo) => full.push(repo.to_string()),
                    None => return answer(422, "There is at least one repository that does not exist or is not accessible to the parent installation."),
                }
            }
            full
        }
        Some(_) => return answer(422, "Invalid request.\n\n\"repositories\" is not an array."),
    };
    let permissions: BTreeMap<String, String> = match body.get("permissions") {
        None | Some(Value::Null) => app.config.permissions.clone(),
        Some(Value::Object(asked)) => {
            let mut granted = BTreeMap::new();
            for (name, level) in asked {
                let level = level.as_str().unwrap_or_default();
                if !["read", "write"].contains(&level)
                    || !grants(&app.config.permissions, (name.as_str(), level))
                {
                    return answer(
                        422,
                        "The permissions requested are not granted to this installation.",
                    );
                }
                granted.insert(name.clone(), level.to_string());
            }
            granted
        }
        Some(_) => return answer(422, "Invalid request.\n\n\"permissions\" is not an object."),
    };
    let now = SystemTime::now();
    // `expires_at` is said in whole seconds: the token expires at that second.
    let whole = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
        + app.config.token_lifetime.as_secs().max(1);
    let expires_at = UNIX_EPOCH + Duration::from_secs(whole);
    let expires = Instant::now() + expires_at.duration_since(now).unwrap_or_default();
    let n = app.tokens.len() + 1;
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let token = format!("{}{n:04}x{nanos:09}", app.config.token_prefix);
    app.tokens.push(InstallationToken {
        token: token.clone(),
        repositories: wanted
            .iter()
            .map(|r| r.split_once('/').map_or(r.as_str(), |(_, n)| n).to_string())
            .collect(),
        permissions: permissions.clone(),
        expires,
        expires_at,
        revoked: false,
        revoke_at_next_use: None,
    });
    let mut minted = shapes::access_token(url, &token, expires_at, &permissions, &wanted);
    if let Some(listed) = minted["repositories"].as_array_mut() {
        for (shown, repo) in listed.iter_mut().zip(&wanted) {
            if let Some((_, id)) = repos.iter().find(|(r, _)| r == repo) {
                shown["id"] = Value::from(*id);
            }
        }
    }
    Answer::json(201, minted)
}
