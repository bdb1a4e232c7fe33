use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const KEY: &str = testkit::forge::app::APP_KEY_PEM;
const PUBLIC: &str = testkit::forge::app::APP_PUBLIC_PEM;

fn repo(api_url: &str, token: Option<&str>) -> RepoRow {
    RepoRow {
        id: 1,
        name: "octo/hello".into(),
        clone_url: "https://github.com/octo/hello.git".into(),
        forge: "github".into(),
        webhook_secret: String::new(),
        api_url: Some(api_url.into()),
        api_token: token.map(|t| format!("plain:{t}")),
        default_branch: None,
        created_at: 0,
        public_read: Some(false),
        forge_repo_id: None,
    }
}

#[test]
fn a_jwt_is_rs256_issued_by_the_app_backdated_and_short() {
    let app = GitHubApp::new(4242, KEY).unwrap();
    let now = SystemTime::now();
    let jwt = app.jwt_at(now).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["4242"]);
    let decoded = jsonwebtoken::decode::<Claims>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(decoded.header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(decoded.claims.iss, "4242");
    assert_eq!(decoded.claims.iat, secs - 60);
    assert!(decoded.claims.exp > secs);
    assert!(
        decoded.claims.exp - decoded.claims.iat <= 600,
        "GitHub refuses more than 10 minutes"
    );
    // Another key's signature does not verify: the claims are really signed.
    let other = GitHubApp::new(4242, testkit::forge::app::OTHER_KEY_PEM).unwrap();
    let forged = other.jwt_at(now).unwrap();
    assert!(jsonwebtoken::decode::<Claims>(
        &forged,
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .is_err());
}

#[test]
fn only_an_rsa_private_key_is_an_apps_key() {
    let ec = GitHubApp::new(1, testkit::forge::app::EC_KEY_PEM).unwrap_err();
    assert!(
        format!("{ec:#}").contains("not an RSA private key"),
        "{ec:#}"
    );
    let public = GitHubApp::new(1, PUBLIC).unwrap_err();
    assert!(
        format!("{public:#}").contains("RSA private key"),
        "{public:#}"
    );
    let garbage = GitHubApp::new(1, "hello").unwrap_err();
    assert!(
        format!("{garbage:#}").contains("RSA private key"),
        "{garbage:#}"
    );
    assert!(GitHubApp::new(0, KEY).is_err());
    let dir = tempfile::tempdir().unwrap();
    let missing = GitHubApp::from_key_file(1, &dir.path().join("app.pem")).unwrap_err();
    assert!(
        format!("{missing:#}").contains("cannot read"),
        "{missing:#}"
    );
}

#[test]
fn tokens_are_replaced_before_they_expire() {
    assert_eq!(
        refresh_in(Duration::from_secs(3600)),
        Duration::from_secs(3300)
    );
    assert_eq!(refresh_in(Duration::from_secs(4)), Duration::from_secs(2));
    assert_eq!(refresh_in(Duration::ZERO), Duration::ZERO);
}

#[test]
fn each_use_asks_only_what_it_needs() {
    let read = Use::ReadCode.permissions();
    assert_eq!(read.get("contents"), Some(&"read"));
    assert!(read.values().all(|level| *level == "read"));
    assert!(Use::Lookup
        .permissions()
        .values()
        .all(|level| *level == "read"));
    assert!(!Use::Report.permissions().contains_key("contents"));
    assert!(!Use::Report.permissions().contains_key("issues"));
    assert!(!Use::Answer.permissions().contains_key("contents"));
    assert_eq!(Use::Write.permissions().get("contents"), Some(&"write"));
}

#[test]
fn nothing_prints_a_token_or_the_key() {
    let token = Token::new("ghs_s3cr3t".into());
    assert!(!format!("{token:?} {token}").contains("s3cr3t"));
    let app = GitHubApp::new(7, KEY).unwrap();
    let auth = ForgeAuth::new(plue_vault::Vault::unkeyed(), Some(app.clone()));
    let shown = format!("{app:?} {auth:?}");
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains(&KEY[40..80]),
        "{shown}"
    );
}

/// GitHub's id of the repository named `octo/hello` today.
const HELLO_ID: i64 = 555;

/// A GitHub answering as the App's API: the installation of `octo/hello`, and tokens
/// valid for `valid_for`, each request's body recorded.
async fn github(valid_for: Duration) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::{get, post};
    let asked: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen = asked.clone();
    let minted = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new()
        .route(
            "/repos/octo/hello/installation",
            get(|| async { axum::Json(serde_json::json!({"id": 99})) }),
        )
        .route(
            "/app/installations/99/access_tokens",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                let minted = minted.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    let mut n = minted.lock().unwrap();
                    *n += 1;
                    let expires = chrono::DateTime::<chrono::Utc>::from(
                        std::time::SystemTime::now() + valid_for,
                    );
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({
                            "token": format!("ghs_token{n}"),
                            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            "repositories": [{"id": HELLO_ID, "full_name": "octo/hello"}],
                        })),
                    )
                }
            }),
        )
        .route(
            "/app",
            get(|| async { axum::Json(serde_json::json!({"id": 7, "slug": "plue-app"})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}"), asked)
}

#[tokio::test]
async fn installation_tokens_are_narrowed_cached_per_use_and_refreshed() {
    let (api, asked) = github(Duration::from_secs(2)).await;
    let auth = ForgeAuth::new(
        plue_vault::Vault::unkeyed(),
        Some(
            GitHubApp::new(7, KEY)
                .unwrap()
                .with_api_url(Some(api.clone())),
        ),
    );
    let repo = repo(&api, None);
    assert!(auth.is_app(&repo));
    let write = auth.token(&repo, Use::Write).await.unwrap().unwrap();
    let again = auth.token(&repo, Use::Write).await.unwrap().unwrap();
    assert_eq!(write, again, "cached");
    let read = auth.token(&repo, Use::ReadCode).await.unwrap().unwrap();
    assert_ne!(read, write, "another use, another token");
    {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0]["repositories"], serde_json::json!(["hello"]));
        assert_eq!(asked[0]["permissions"]["contents"], "write");
        assert_eq!(
            asked[1]["permissions"],
            serde_json::json!({"contents": "read", "metadata": "read"})
        );
    }
    // Half of its two seconds later the write token is replaced, before it expires.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = auth.token(&repo, Use::Write).await.unwrap().unwrap();
    assert_ne!(renewed, write);
    // A refused token is not offered again.
    assert_eq!(auth.forget_token(&repo, &renewed), Some(Use::Write));
    assert_eq!(auth.forget_token(&repo, &renewed), None, "forgotten once");
    let after_refusal = auth.token(&repo, Use::Write).await.unwrap().unwrap();
    assert_ne!(after_refusal, renewed);
    // Every token handed out, and the key, are the run's secrets.
    let secrets: Vec<String> = auth
        .secrets_of(&repo)
        .unwrap()
        .iter()
        .map(|t| t.expose().to_string())
        .collect();
    for token in [&write, &read, &renewed, &after_refusal] {
        assert!(secrets.contains(&token.expose().to_string()));
    }
    assert!(secrets.iter().any(|s| s.contains("PRIVATE KEY")));
    assert_eq!(auth.app_login(&repo).await.unwrap(), "plue-app[bot]");
}

#[tokio::test]
async fn a_personal_token_wins_and_gitea_never_uses_the_app() {
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let auth = ForgeAuth::new(
        plue_vault::Vault::unkeyed(),
        Some(
            GitHubApp::new(7, KEY)
                .unwrap()
                .with_api_url(Some(api.clone())),
        ),
    );
    let personal = repo(&api, Some("pat"));
    assert!(!auth.is_app(&personal));
    let token = auth.token(&personal, Use::Write).await.unwrap().unwrap();
    assert_eq!(token.expose(), "pat");
    let mut gitea = repo(&api, None);
    gitea.forge = "gitea".into();
    assert!(!auth.is_app(&gitea));
    assert!(auth.token(&gitea, Use::Write).await.unwrap().is_none());
    assert!(asked.lock().unwrap().is_empty());
    // Without an App, a GitHub repository without a token has no credential.
    let plain = ForgeAuth::personal(plue_vault::Vault::unkeyed());
    assert!(plain
        .token(&repo(&api, None), Use::Lookup)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_app_not_installed_on_the_repository_says_so() {
    let (api, _) = github(Duration::from_secs(3600)).await;
    let auth = ForgeAuth::new(
        plue_vault::Vault::unkeyed(),
        Some(
            GitHubApp::new(7, KEY)
                .unwrap()
                .with_api_url(Some(api.clone())),
        ),
    );
    let mut elsewhere = repo(&api, None);
    elsewhere.name = "octo/other".into();
    let refused = auth.token(&elsewhere, Use::Write).await.unwrap_err();
    assert!(matches!(refused, PostError::Permanent(_)));
    assert!(
        refused.to_string().contains("not installed on octo/other"),
        "{refused}"
    );
}

// The attacker took the name `octo/hello` (an org rename, a deletion) and installed the
// public App on their repository: the installation found by name mints a token for their
// repository, which must never serve the registered one (bound to its own forge id).
#[tokio::test]
async fn a_token_for_another_repository_of_the_same_name_is_refused() {
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let auth = ForgeAuth::new(
        plue_vault::Vault::unkeyed(),
        Some(
            GitHubApp::new(7, KEY)
                .unwrap()
                .with_api_url(Some(api.clone())),
        ),
    );
    let mut registered = repo(&api, None);
    registered.forge_repo_id = Some(HELLO_ID + 1);
    let refused = auth.token(&registered, Use::Write).await.unwrap_err();
    assert!(matches!(refused, PostError::Moved(_)), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("now belongs to another repository"),
        "{refused}"
    );
    assert!(!refused.to_string().contains("ghs_"), "{refused}");
    assert_eq!(
        asked.lock().unwrap().len(),
        1,
        "GitHub was asked, the token not used"
    );
    assert!(auth.git_credential(&registered).await.is_err());
    // The token was never handed out: nothing of it is a run's secret either.
    assert!(auth
        .secrets_of(&registered)
        .unwrap()
        .iter()
        .all(|s| !s.expose().starts_with("ghs_")));
    // Bound to the repository GitHub names, the same request is served.
    registered.forge_repo_id = Some(HELLO_ID);
    assert!(auth.token(&registered, Use::Write).await.unwrap().is_some());
}

/// A server that answers every request 200 `{}` and records each one: method, path and
/// `Authorization` header.
async fn recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let recorded = recorded.clone();
        async move {
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            recorded
                .lock()
                .unwrap()
                .push(format!("{} {} {auth}", request.method(), request.uri()));
            axum::Json(serde_json::json!({"id": 99, "slug": "x", "token": "t",
                "expires_at": "2999-01-01T00:00:00Z"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}"), seen)
}

/// Everything an engine may ask of `auth` for `repo`: none of it may be served as the App.
async fn ask_everything(auth: &ForgeAuth, repo: &RepoRow) {
    assert!(!auth.is_app(repo));
    assert!(!auth.has_credential(repo));
    for use_ in [
        Use::ReadCode,
        Use::Lookup,
        Use::Report,
        Use::Answer,
        Use::Write,
    ] {
        assert!(auth.token(repo, use_).await.unwrap().is_none());
    }
    assert_eq!(auth.forget_token(repo, &Token::new("t".into())), None);
    let refused = PostError::Refused(Refused::new("HTTP 401".into(), Token::new("t".into())));
    let mut runs = 0;
    let final_error = auth
        .renewing(repo, || {
            runs += 1;
            let refused = refused.clone();
            async move { Err::<(), _>(refused) }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(final_error, PostError::Permanent(_)),
        "{final_error}"
    );
    assert_eq!(runs, 1, "nothing of the App renews another API's token");
    assert!(auth.git_credential(repo).await.unwrap().is_none());
    assert!(auth.app_login(repo).await.is_err());
    let secrets = auth.secrets_of(repo).unwrap();
    assert!(secrets.iter().all(|s| !s.expose().contains("PRIVATE KEY")));
}

// An admin registers a GitHub Enterprise repository (its api_url another host) without a
// token, on an engine that is the github.com App (no --github-app-api-url): the App's JWT,
// which mints tokens for every installation, must never be sent to that host.
#[tokio::test]
async fn a_repository_on_another_api_never_gets_the_apps_jwt() {
    let (elsewhere, seen) = recorder().await;
    let app = GitHubApp::new(7, KEY).unwrap();
    assert_eq!(app.api_url(), DEFAULT_APP_API);
    let auth = ForgeAuth::new(plue_vault::Vault::unkeyed(), Some(app));
    ask_everything(&auth, &repo(&elsewhere, None)).await;
    // The default App does serve a github.com repository (api_url unset or github.com's).
    let mut on_github = repo(&elsewhere, None);
    on_github.api_url = None;
    assert!(auth.is_app(&on_github));
    on_github.api_url = Some("https://api.github.com/".into());
    assert!(auth.is_app(&on_github));
    assert_eq!(seen.lock().unwrap().as_slice(), &[] as &[String]);
}

// The App lives on one GitHub Enterprise Server (--github-app-api-url): a repository on
// another API, or on github.com, gets nothing of it either; one on the App's API does.
#[tokio::test]
async fn only_the_apps_own_api_gets_its_jwt() {
    let (elsewhere, seen) = recorder().await;
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let auth = ForgeAuth::new(
        plue_vault::Vault::unkeyed(),
        Some(
            GitHubApp::new(7, KEY)
                .unwrap()
                .with_api_url(Some(format!("{api}/"))),
        ),
    );
    ask_everything(&auth, &repo(&elsewhere, None)).await;
    let mut on_github = repo(&elsewhere, None);
    on_github.api_url = None;
    ask_everything(&auth, &on_github).await;
    assert_eq!(seen.lock().unwrap().as_slice(), &[] as &[String]);
    assert!(asked.lock().unwrap().is_empty());
    assert!(auth
        .token(&repo(&api, None), Use::Write)
        .await
        .unwrap()
        .is_some());
    assert_eq!(seen.lock().unwrap().as_slice(), &[] as &[String]);
}

/// The App of `api` and the repository it serves there.
fn app_auth(api: &str) -> (ForgeAuth, RepoRow) {
    let app = GitHubApp::new(7, KEY)
        .unwrap()
        .with_api_url(Some(api.to_string()));
    (
        ForgeAuth::new(plue_vault::Vault::unkeyed(), Some(app)),
        repo(api, None),
    )
}

/// The count of `use_`'s refused tokens that became `renewal`, in this process.
fn counted(use_: Use, renewal: Renewal) -> u64 {
    renewal_counts()
        .into_iter()
        .find(|(u, r, _)| *u == use_ && *r == renewal)
        .map(|(_, _, n)| n)
        .unwrap()
}

/// The forge's refusal of `token`.
fn refusal_of(token: &Token) -> PostError {
    PostError::Refused(Refused::new(
        "POST /check-runs: HTTP 401 Unauthorized: Bad credentials".into(),
        token.clone(),
    ))
}

// regression (issue 70): a 401 to a check run (written with the report token) re-minted the
// token the run's answers use, so the refused one was presented again and again. One
// exchange presents both: the one refused is forgotten, the other is kept.
#[tokio::test]
async fn exactly_the_refused_token_is_forgotten_and_minted_once() {
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let (auth, repo) = app_auth(&api);
    let answer = auth.token(&repo, Use::Answer).await.unwrap().unwrap();
    let report = auth.token(&repo, Use::Report).await.unwrap().unwrap();
    let reminted = counted(Use::Report, Renewal::Reminted);
    let presented: Mutex<Vec<(Token, Token)>> = Mutex::default();
    let done = auth
        .renewing(&repo, || async {
            let answering = auth.token(&repo, Use::Answer).await?.unwrap();
            let reporting = auth.token(&repo, Use::Report).await?.unwrap();
            presented
                .lock()
                .unwrap()
                .push((answering.clone(), reporting.clone()));
            if reporting == report {
                return Err(refusal_of(&reporting));
            }
            Ok("written")
        })
        .await
        .unwrap();
    assert_eq!(done, "written");
    let presented = presented.into_inner().unwrap();
    assert_eq!(presented.len(), 2, "one refusal, one more try");
    assert_eq!(
        presented[1].0, answer,
        "the answers' token was not refused: kept"
    );
    assert_ne!(
        presented[1].1, report,
        "the refused token is never presented again"
    );
    assert_eq!(asked.lock().unwrap().len(), 3, "one new token");
    assert_eq!(
        asked.lock().unwrap()[2]["permissions"]["checks"],
        "write",
        "minted for the use that was refused"
    );
    assert!(counted(Use::Report, Renewal::Reminted) > reminted);
}

// A token refused right after it was minted is not renewed forever: the second refusal of
// a use is an error that says which use and why.
#[tokio::test]
async fn a_new_token_refused_again_is_an_error_naming_the_use() {
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let (auth, repo) = app_auth(&api);
    let again = counted(Use::Lookup, Renewal::RefusedAgain);
    let mut tries = 0;
    let refused = auth
        .renewing(&repo, || {
            tries += 1;
            let auth = &auth;
            let repo = &repo;
            async move {
                let token = auth.token(repo, Use::Lookup).await?.unwrap();
                Err::<(), _>(refusal_of(&token))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(tries, 2);
    assert_eq!(
        asked.lock().unwrap().len(),
        2,
        "minted once more, not forever"
    );
    let PostError::Permanent(why) = &refused else {
        panic!("{refused:?}");
    };
    assert!(why.contains("lookup") && why.contains("new one"), "{why}");
    assert!(why.contains("Bad credentials"), "{why}");
    assert!(!why.contains("ghs_"), "{why}");
    assert!(counted(Use::Lookup, Renewal::RefusedAgain) > again);
    // Neither refused token stays cached: the next exchange mints again.
    auth.token(&repo, Use::Lookup).await.unwrap();
    assert_eq!(asked.lock().unwrap().len(), 3);
}

// A personal token cannot be minted again: its refusal is final at once, and says so.
#[tokio::test]
async fn a_refused_personal_token_is_final() {
    let (api, asked) = github(Duration::from_secs(3600)).await;
    let (auth, _) = app_auth(&api);
    let personal = repo(&api, Some("pat"));
    let mut tries = 0;
    let refused: anyhow::Error = auth
        .renewing(&personal, || {
            tries += 1;
            let token = Token::new("pat".into());
            async move {
                Err::<(), _>(
                    anyhow::Error::new(Refused::new("GET /x: HTTP 401".into(), token))
                        .context("asking the forge"),
                )
            }
        })
        .await
        .unwrap_err();
    assert_eq!(tries, 1);
    assert!(asked.lock().unwrap().is_empty());
    let said = format!("{refused:#}");
    assert!(said.contains("api_token of octo/hello"), "{said}");
    assert!(
        refused.refusal().is_none(),
        "final: no outer exchange renews it"
    );
}

#[test]
fn refusals_are_read_from_the_forges_and_gits_own_words() {
    use reqwest::StatusCode;
    assert!(http_refused(StatusCode::UNAUTHORIZED, ""));
    assert!(http_refused(
        StatusCode::FORBIDDEN,
        r#"{"message":"Bad credentials"}"#
    ));
    assert!(!http_refused(
        StatusCode::FORBIDDEN,
        r#"{"message":"Resource not accessible by integration"}"#
    ));
    assert!(!http_refused(StatusCode::NOT_FOUND, ""));
    assert!(!http_refused(StatusCode::BAD_GATEWAY, "Bad credentials"));
    for said in [
        "remote: Invalid username or password.\nfatal: Authentication failed for 'https://github.com/o/r/'",
        "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
        "error: The requested URL returned error: 401",
    ] {
        assert!(git_refused(said), "{said}");
    }
    for said in [
        "fatal: unable to access 'https://github.com/o/r/': Could not resolve host: github.com",
        "error: The requested URL returned error: 403",
        " ! [remote rejected] main -> main (protected branch hook declined)",
    ] {
        assert!(!git_refused(said), "{said}");
    }
    let refused = Refused::new("HTTP 401".into(), Token::new("ghs_s3cr3t".into()));
    let shown = format!(
        "{refused:?} {refused} {:?}",
        PostError::Refused(refused.clone())
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
}
