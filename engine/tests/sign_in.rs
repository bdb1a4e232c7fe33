//! People sign in with their forge account or an OpenID Connect provider
//! (`server/src/sign_in/`), played for real against in-process engines: testkit's fake
//! GitHub and Gitea OAuth servers (PKCE-checking, `state` round trip), a hostile OpenID
//! Connect issuer whose ID tokens the test forges (`support::sign_in`), and npm's
//! `oidc-provider` (`scripts/oidc/`). A browser that follows redirects and keeps cookies
//! per origin drives the flow; the attacker's cases are tests: a forged or replayed
//! `state`, a code stolen from another browser (PKCE), forged ID tokens, a disabled user.
//!
//! Why one file past ~600 lines: one feature's tests over one fixture (the site and its
//! providers), each provider and each attack a test; the set-up they share is in
//! `support::sign_in`.

use std::collections::HashMap;

use plue_server::server::RunningEngine;
use plue_server::sign_in::{base_url, ClientSecret, ForgeSettings, OidcSettings, Settings};
use plue_store::Store;
use testkit::oauth::{FakeOAuth, OAuthFlavor};

use crate::support;
use crate::support::sign_in::{Browser, Forgery, HostileIssuer, Page};

const ADMIN: &str = "admin-token-of-the-sign-in-tests";
pub(crate) const CLIENT: &str = "plue-client";
pub(crate) const SECRET: &str = "plue-client-secret";

struct Site {
    engine: RunningEngine,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start(settings: Settings) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::admin_config("registration-token-of-sign-in", ADMIN);
        config.sign_in = settings;
        let engine = support::start_in_process(dir.path(), config).await;
        Site { engine, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.engine.url)
    }

    fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    /// Signs in through `provider` in `browser`, following every redirect.
    async fn sign_in(&self, browser: &mut Browser, provider: &str) -> Page {
        browser
            .visit(&self.url(&format!("/sign-in/{provider}?next=%2Frunners")))
            .await
    }

    /// Whether `browser` has a live session: `/runners` needs one.
    async fn signed_in(&self, browser: &mut Browser) -> bool {
        let page = browser.visit(&self.url("/runners")).await;
        match page.status {
            200 => true,
            401 => false,
            other => panic!("GET /runners answered {other}: {}", page.body),
        }
    }

    async fn user_count(&self) -> usize {
        self.store().list_users().await.unwrap().len()
    }
}

/// Sign-in settings for the fake forge OAuth server `fake` (client [`CLIENT`]).
pub(crate) fn forge_settings(fake: &FakeOAuth) -> ForgeSettings {
    ForgeSettings {
        url: base_url("--test", fake.url()).unwrap(),
        api_url: base_url("--test", &fake.api_url()).unwrap(),
        client_id: CLIENT.into(),
        client_secret: ClientSecret(SECRET.into()),
    }
}

async fn github_site() -> (FakeOAuth, Site) {
    let fake = FakeOAuth::start(OAuthFlavor::GitHub, CLIENT, SECRET);
    let site = Site::start(Settings {
        github: Some(forge_settings(&fake)),
        ..Settings::default()
    })
    .await;
    fake.register_redirect(&site.url("/sign-in/github/callback"));
    (fake, site)
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_first_github_sign_in_creates_the_linked_user_the_second_finds_it_and_sign_out_ends_it() {
    let (fake, site) = github_site().await;
    // The sign-in page links the provider (minijinja writes `/` in attributes as `&#x2f;`).
    let login = support::get_text(&reqwest::Client::new(), &site.url("/login"))
        .await
        .replace("&#x2f;", "/");
    assert!(login.contains("Sign in with GitHub"), "{login}");
    assert!(login.contains("href=\"/sign-in/github?next="), "{login}");
    // A page that needs a session offers the provider too, returning there.
    let runners = Browser::new().visit(&site.url("/runners")).await;
    assert_eq!(runners.status, 401);
    let runners = runners.body.replace("&#x2f;", "/");
    assert!(
        runners.contains("href=\"/sign-in/github?next=%2Frunners\""),
        "{runners}"
    );
    let before = site.user_count().await;
    fake.sign_in_as("Octo-Cat");

    let mut first = Browser::new();
    let page = site.sign_in(&mut first, "github").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.url.path(), "/sign-in/github/callback");
    assert!(page.body.contains("Signed in as Octo-Cat"), "{}", page.body);
    assert!(page.body.contains("url=/runners"), "{}", page.body);
    assert!(
        page.trail
            .iter()
            .any(|u| u.path() == "/login/oauth/authorize"),
        "{:?}",
        page.trail
    );
    // The authorization request carried an S256 challenge, and the exchange its verifier.
    let authorize = page
        .trail
        .iter()
        .find(|u| u.path() == "/login/oauth/authorize")
        .unwrap();
    let params = query(authorize.as_str());
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], site.url("/sign-in/github/callback"));
    let exchanges = fake.token_requests();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].refused, None);
    assert_eq!(exchanges[0].form["code_verifier"].len(), 64);
    // The sign-in cookie is spent; the session works.
    assert_eq!(first.cookie(&site.engine.url, "plue_sign_in"), None);
    assert!(site.signed_in(&mut first).await);

    let user = site
        .store()
        .user_by_name("Octo-Cat")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        site.store()
            .user_of_forge_login("github", "octo-cat")
            .await
            .unwrap(),
        Some(user.id),
        "linked as github:octo-cat"
    );
    assert_eq!(site.user_count().await, before + 1);
    // The provider's access token is stored nowhere: no token row holds its hash.
    let tokens = site.store().list_tokens(Some(user.id)).await.unwrap();
    assert_eq!(tokens.len(), 1, "the session's own token only: {tokens:?}");
    assert_eq!(tokens[0].name, "sign-in with GitHub");

    // A second sign-in, in another browser, is the same user.
    let mut second = Browser::new();
    let page = site.sign_in(&mut second, "github").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(site.signed_in(&mut second).await);
    assert_eq!(site.user_count().await, before + 1);
    let again = site
        .store()
        .user_by_name("Octo-Cat")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, user.id);

    // Signing out ends that browser's session only.
    let csrf = first.cookie(&site.engine.url, "plue_csrf").unwrap();
    let request = first
        .http()
        .post(site.url("/logout"))
        .form(&[("csrf", csrf.as_str())]);
    let answer = first.send(request).await;
    assert_eq!(answer.status(), 303);
    assert!(!site.signed_in(&mut first).await);
    assert!(site.signed_in(&mut second).await);
}

#[tokio::test]
async fn a_forged_or_replayed_state_is_refused_and_exchanges_no_code() {
    let (fake, site) = github_site().await;
    // Forged: the callback with another state.
    let mut browser = Browser::new();
    let (status, to_provider, _) = browser.step(&site.url("/sign-in/github")).await;
    assert_eq!(status, 303);
    let (status, back, _) = browser.step(&to_provider.unwrap()).await;
    assert_eq!(status, 302);
    let back = back.unwrap();
    let params = query(&back);
    let mut forged = reqwest::Url::parse(&back).unwrap();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &params["code"])
        .append_pair("state", "forged-state");
    let page = browser.visit(forged.as_str()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("state"), "{}", page.body);
    // Checked once: the right state afterwards finds nothing.
    let page = browser.visit(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!site.signed_in(&mut browser).await);
    assert!(fake.token_requests().is_empty(), "no code was exchanged");

    // Replayed: a completed sign-in's callback, again, with the cookie it had.
    let mut browser = Browser::new();
    let (_, to_provider, _) = browser.step(&site.url("/sign-in/github")).await;
    let attempt = browser.cookie(&site.engine.url, "plue_sign_in").unwrap();
    let (_, back, _) = browser.step(&to_provider.unwrap()).await;
    let back = back.unwrap();
    let page = browser.visit(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(fake.token_requests().len(), 1);
    let mut replayer = Browser::new();
    replayer.cookies.insert(
        format!(
            "127.0.0.1:{}",
            reqwest::Url::parse(&site.engine.url)
                .unwrap()
                .port()
                .unwrap()
        ),
        [("plue_sign_in".to_string(), attempt)].into(),
    );
    let page = replayer.visit(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("used already"), "{}", page.body);
    assert!(!site.signed_in(&mut replayer).await);
    // The same browser again: its cookie is gone.
    let page = browser.visit(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(fake.token_requests().len(), 1, "a replay exchanges nothing");
}

#[tokio::test]
async fn a_code_stolen_from_another_browser_does_not_sign_in_pkce() {
    let (fake, site) = github_site().await;
    fake.sign_in_as("victim");
    let mut victim = Browser::new();
    let (_, to_provider, _) = victim.step(&site.url("/sign-in/github")).await;
    let (_, back, _) = victim.step(&to_provider.unwrap()).await;
    let stolen = query(&back.unwrap())["code"].clone();
    // The attacker starts a sign-in of its own and injects the victim's code.
    let mut attacker = Browser::new();
    let (_, to_provider, _) = attacker.step(&site.url("/sign-in/github")).await;
    let state = query(&to_provider.unwrap())["state"].clone();
    let mut injected = reqwest::Url::parse(&site.url("/sign-in/github/callback")).unwrap();
    injected
        .query_pairs_mut()
        .append_pair("code", &stolen)
        .append_pair("state", &state);
    let page = attacker.visit(injected.as_str()).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("bad_verification_code"), "{}", page.body);
    assert!(!site.signed_in(&mut attacker).await);
    let exchanges = fake.token_requests();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(
        exchanges[0].refused.as_deref(),
        Some("bad_verification_code")
    );
    assert!(site.store().user_by_name("victim").await.unwrap().is_none());
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_and_gets_no_new_user() {
    let (fake, site) = github_site().await;
    fake.sign_in_as("mallory");
    let mut browser = Browser::new();
    assert_eq!(site.sign_in(&mut browser, "github").await.status, 200);
    let user = site.store().user_by_name("mallory").await.unwrap().unwrap();
    assert!(site.store().disable_user(user.id).await.unwrap());
    assert!(
        !site.signed_in(&mut browser).await,
        "disabling ends the session"
    );
    let count = site.user_count().await;
    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "github").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("disabled"), "{}", page.body);
    assert!(!site.signed_in(&mut browser).await);
    assert_eq!(site.user_count().await, count, "no new user for the login");
}

#[tokio::test]
async fn gitea_sign_in_links_gitea_logins_and_makes_names_unique() {
    let fake = FakeOAuth::start(OAuthFlavor::Gitea, CLIENT, SECRET);
    let site = Site::start(Settings {
        gitea: Some(forge_settings(&fake)),
        ..Settings::default()
    })
    .await;
    fake.register_redirect(&site.url("/sign-in/gitea/callback"));
    // Someone else already has the name.
    site.store()
        .create_user(&plue_store::NewUser::person("octocat"))
        .await
        .unwrap();
    fake.sign_in_as("octocat");
    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "gitea").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Signed in as octocat-2"),
        "{}",
        page.body
    );
    let user = site
        .store()
        .user_by_name("octocat-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        site.store()
            .user_of_forge_login("gitea", "octocat")
            .await
            .unwrap(),
        Some(user.id)
    );
    assert_eq!(
        site.store()
            .user_of_forge_login("github", "octocat")
            .await
            .unwrap(),
        None
    );
    let mut again = Browser::new();
    let page = site.sign_in(&mut again, "gitea").await;
    assert!(
        page.body.contains("Signed in as octocat-2"),
        "{}",
        page.body
    );
    // GitHub is not configured here.
    let page = Browser::new().visit(&site.url("/sign-in/github")).await;
    assert_eq!(page.status, 404);
}

async fn oidc_site(issuer: &str, groups_claim: Option<&str>) -> Site {
    Site::start(Settings {
        oidc: Some(OidcSettings {
            issuer: base_url("--oidc-issuer", issuer).unwrap(),
            client_id: CLIENT.into(),
            client_secret: ClientSecret(SECRET.into()),
            scopes: vec!["profile".into()],
            groups_claim: groups_claim.map(str::to_string),
            label: "Example ID".into(),
        }),
        ..Settings::default()
    })
    .await
}

#[tokio::test]
async fn forged_id_tokens_are_refused() {
    let issuer = HostileIssuer::start(CLIENT, SECRET).await;
    let site = oidc_site(&issuer.url, None).await;
    let count = site.user_count().await;
    for forgery in [
        Forgery::OtherKey,
        Forgery::OtherIssuer,
        Forgery::OtherAudience,
        Forgery::OtherNonce,
        Forgery::Expired,
        Forgery::Symmetric,
    ] {
        issuer.forge(forgery);
        let mut browser = Browser::new();
        let page = site.sign_in(&mut browser, "oidc").await;
        assert_eq!(page.status, 401, "{forgery:?}: {}", page.body);
        assert!(
            page.body.contains("Example ID did not sign you in"),
            "{forgery:?}: {}",
            page.body
        );
        assert!(!site.signed_in(&mut browser).await, "{forgery:?}");
    }
    assert_eq!(
        site.user_count().await,
        count,
        "no forged token made a user"
    );
    // The same provider's honest token signs in.
    issuer.forge(Forgery::None);
    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "oidc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(site.signed_in(&mut browser).await);
}

#[tokio::test]
async fn oidc_subjects_make_users_and_groups_follow_the_claim() {
    let issuer = HostileIssuer::start(CLIENT, SECRET).await;
    let site = oidc_site(&issuer.url, Some("groups")).await;
    let store = site.store();
    for group in ["release", "ops", "qa"] {
        store.create_group(group).await.unwrap();
    }
    issuer.person("sub-1", "jane", &["release", "no-such-group"]);
    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "oidc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let jane = store.user_by_name("jane").await.unwrap().unwrap();
    assert_eq!(store.group_keys_of(jane.id).await.unwrap(), ["release"]);
    assert!(store
        .group_by_name("no-such-group")
        .await
        .unwrap()
        .is_none());
    // An admin adds jane to qa by hand: no claim removes that.
    let qa = store.group_by_name("qa").await.unwrap().unwrap();
    store.add_group_member(qa.id, jane.id).await.unwrap();
    // The next sign-in's claim names ops instead of release; the name changed too.
    issuer.person("sub-1", "jane.doe", &["OPS"]);
    let page = site.sign_in(&mut Browser::new(), "oidc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Signed in as jane"),
        "found by subject: {}",
        page.body
    );
    assert_eq!(store.group_keys_of(jane.id).await.unwrap(), ["ops", "qa"]);
    // Another subject with the same preferred name is another user.
    issuer.person("sub-2", "jane", &[]);
    let page = site.sign_in(&mut Browser::new(), "oidc").await;
    assert!(page.body.contains("Signed in as jane-2"), "{}", page.body);
    let other = store.user_by_name("jane-2").await.unwrap().unwrap();
    assert!(store.group_keys_of(other.id).await.unwrap().is_empty());
    // A claim naming nothing removes what claims gave, never the hand-given.
    issuer.person("sub-1", "jane", &[]);
    site.sign_in(&mut Browser::new(), "oidc").await;
    assert_eq!(store.group_keys_of(jane.id).await.unwrap(), ["qa"]);
    // Each sign-in is audited.
    let audit = store
        .audit_events(&plue_store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit.iter().filter(|a| a.action == "user.sign_in").count() >= 4,
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_misconfigured_issuer_stops_the_engine_naming_the_flag() {
    // A server that is no OpenID Connect provider: the fake GitHub.
    let fake = FakeOAuth::start(OAuthFlavor::GitHub, CLIENT, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::admin_config("registration-token-of-sign-in", ADMIN);
    config.sign_in.oidc = Some(OidcSettings {
        issuer: base_url("--oidc-issuer", fake.url()).unwrap(),
        client_id: CLIENT.into(),
        client_secret: ClientSecret(SECRET.into()),
        scopes: Vec::new(),
        groups_claim: None,
        label: "X".into(),
    });
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = match plue_server::server::start(store, listener, config, None).await {
        Ok(_) => panic!("the engine started with a provider that is none"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("--oidc-issuer"), "{error}");
    assert!(
        error.contains(".well-known/openid-configuration"),
        "{error}"
    );
}

#[tokio::test]
async fn plue_login_gets_a_token_through_the_loopback_only_with_its_verifier() {
    let (fake, site) = github_site().await;
    fake.sign_in_as("cli-user");
    let verifier = "k".repeat(50);
    let challenge = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&verifier))
    };
    let start = |redirect: &str| {
        let mut url = reqwest::Url::parse(&site.url("/sign-in/github")).unwrap();
        url.query_pairs_mut()
            .append_pair("cli_redirect", redirect)
            .append_pair("cli_state", "cli-state-1")
            .append_pair("cli_challenge", &challenge);
        url.to_string()
    };
    // Only a loopback redirect.
    let page = Browser::new()
        .visit(&start("http://evil.example:80/callback"))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    // The flow ends at the loopback with a code and plue login's state.
    let exchange = |code: String, verifier: String| {
        let url = site.url("/sign-in/token");
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({"code": code, "code_verifier": verifier}))
                .send()
                .await
                .unwrap();
            (
                answer.status().as_u16(),
                answer.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let mut browser = Browser::new();
    let first = cli_code(&mut browser, start("http://127.0.0.1:9/callback")).await;
    let (status, body) = exchange(first.clone(), "w".repeat(50)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = exchange(first, verifier.clone()).await;
    assert_eq!(
        status, 400,
        "a code is good once, right verifier or not: {body}"
    );
    let second = cli_code(&mut browser, start("http://127.0.0.1:9/callback")).await;
    let (status, body) = exchange(second.clone(), verifier.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "cli-user");
    let token = body["token"].as_str().unwrap();
    let me: serde_json::Value = reqwest::Client::new()
        .get(site.url("/api/user"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "cli-user", "{me}");
    let (status, _) = exchange(second, verifier).await;
    assert_eq!(status, 400, "spent");
}

/// Runs a `plue login` sign-in from `url` to its loopback redirect: the code handed there.
async fn cli_code(browser: &mut Browser, url: String) -> String {
    let (_, to_provider, _) = browser.step(&url).await;
    let (_, back, _) = browser.step(&to_provider.unwrap()).await;
    let (status, loopback, _) = browser.step(&back.unwrap()).await;
    assert_eq!(status, 303);
    let loopback = loopback.unwrap();
    assert!(
        loopback.starts_with("http://127.0.0.1:9/callback?"),
        "{loopback}"
    );
    let params = query(&loopback);
    assert_eq!(params["state"], "cli-state-1");
    params["code"].clone()
}

#[tokio::test]
async fn plue_login_signs_in_through_the_browser_and_keeps_the_token_for_other_commands() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;

    let (fake, site) = github_site().await;
    fake.sign_in_as("terminal-user");
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().join("plue");
    let mut child = support::plain_plue()
        .args([
            "login",
            "--server",
            &site.engine.url,
            "--provider",
            "github",
        ])
        .args(["--no-browser", "--timeout", "60"])
        .env("PLUE_CONFIG_DIR", &config_dir)
        .env_remove("PLUE_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (url_tx, url_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.trim().strip_prefix("http") {
                let _ = url_tx.send(format!("http{url}"));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let url = tokio::task::spawn_blocking(move || {
        url_rx.recv_timeout(std::time::Duration::from_secs(60))
    })
    .await
    .unwrap()
    .expect("plue login printed the URL to open");
    assert!(
        url.contains("cli_redirect=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    // The browser: the provider, the engine's callback, plue login's loopback.
    let page = Browser::new().visit(&url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("you can close this tab"),
        "{}",
        page.body
    );
    assert_eq!(page.url.host_str(), Some("127.0.0.1"));
    assert_eq!(page.url.path(), "/callback");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let printed = reader.join().unwrap();
    assert!(status.success(), "{printed}");
    assert!(printed.contains("Signed in to"), "{printed}");
    assert!(printed.contains("as terminal-user"), "{printed}");

    // The token is kept 0600 in a 0700 directory, for this server.
    let file = config_dir.join("tokens.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&config_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let tokens: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = &tokens[&site.engine.url];
    let me: serde_json::Value = reqwest::Client::new()
        .get(site.url("/api/user"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "terminal-user", "{me}");

    // Another command uses it without --token or PLUE_TOKEN.
    let server = site.engine.url.clone();
    let listed = tokio::task::spawn_blocking(move || {
        support::plain_plue()
            .args(["token", "list", "--server", &server])
            .env("PLUE_CONFIG_DIR", &config_dir)
            .env_remove("PLUE_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(listed.status.success(), "{}", support::printed(&listed));
    assert!(
        support::stdout(&listed).contains("plue login with GitHub"),
        "{}",
        support::printed(&listed)
    );
}

#[tokio::test]
async fn npm_oidc_provider_signs_people_in_through_its_login_form() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let engine_url = format!("http://{}", listener.local_addr().unwrap());
    let users = serde_json::json!([{
        "login": "jane",
        "password": "jane-password",
        "sub": "0f3c9a1e-jane",
        "preferred_username": "jane.doe",
        "groups": ["release", "not-in-plue"],
    }]);
    let redirect = format!("{engine_url}/sign-in/oidc/callback");
    let Some(provider) =
        support::sign_in::RealOidcProvider::start(CLIENT, SECRET, &redirect, users)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::admin_config("registration-token-of-sign-in", ADMIN);
    config.sign_in.oidc = Some(OidcSettings {
        issuer: base_url("--oidc-issuer", &provider.issuer).unwrap(),
        client_id: CLIENT.into(),
        client_secret: ClientSecret(SECRET.into()),
        scopes: vec!["profile".into(), "groups".into()],
        groups_claim: Some("groups".into()),
        label: "Test ID".into(),
    });
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let engine = plue_server::server::start(store, listener, config, None)
        .await
        .unwrap();
    let site = Site { engine, _dir: dir };
    site.store().create_group("release").await.unwrap();

    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "oidc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.path().starts_with("/interaction/"), "{}", page.url);
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form's action")
        .to_string();
    let action = page.url.join(&action).unwrap();
    // A wrong password: the form again, nobody signed in.
    let request = browser
        .http()
        .post(action.clone())
        .form(&[("login", "jane"), ("password", "wrong")]);
    assert_eq!(browser.send(request).await.status(), 401);
    // The right one: back to Plue, signed in.
    let request = browser
        .http()
        .post(action)
        .form(&[("login", "jane"), ("password", "jane-password")]);
    let answer = browser.send(request).await;
    assert_eq!(answer.status(), 303, "{:?}", answer.text().await);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    let page = browser
        .visit(page.url.join(&location).unwrap().as_str())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Signed in as jane.doe"), "{}", page.body);
    assert!(site.signed_in(&mut browser).await);
    let jane = site
        .store()
        .user_by_name("jane.doe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        site.store().group_keys_of(jane.id).await.unwrap(),
        ["release"]
    );
    // The provider's session signs the same person in again: the same user.
    let page = site.sign_in(&mut browser, "oidc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Signed in as jane.doe"), "{}", page.body);
    assert!(site
        .store()
        .user_by_name("jane.doe-2")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn headless_chromium_signs_in_with_github_and_lands_signed_in() {
    crate::webdriver::browser_test(180, |chromium, driver| async move {
        let sandbox = support::Sandbox::new("sign-in-browser");
        let (fake, site) = github_site().await;
        fake.sign_in_as("chromium-user");
        let browser = crate::webdriver::Browser::start(&sandbox, &chromium, &driver).await;
        browser.goto(&site.url("/login?next=%2Frunners")).await;
        browser
            .wait(
                std::time::Duration::from_secs(20),
                "the provider's link",
                "return document.querySelector('#sign-in-providers a') ? true : null;",
            )
            .await;
        browser.click("#sign-in-providers a").await;
        // The provider, the callback's page, then /runners with the session's
        // SameSite=Strict cookies sent: the real browser's cookie rules.
        let user = browser
            .wait(
                std::time::Duration::from_secs(30),
                "signed in on /runners",
                "const u = document.getElementById('user'); \
                 return location.pathname === '/runners' && u ? u.textContent : null;",
            )
            .await;
        assert!(
            user.as_str().unwrap_or_default().contains("chromium-user"),
            "{user}"
        );
        assert!(site
            .store()
            .user_by_name("chromium-user")
            .await
            .unwrap()
            .is_some());
        browser.close_without_console_errors().await;
    })
    .await;
}

#[tokio::test]
async fn a_real_gitea_signs_people_in_with_its_oauth2_application() {
    let Some(gitea) = support::real_gitea::gitea("sign_in::a_real_gitea") else {
        return;
    };
    let login = support::real_gitea::unique("signer");
    gitea.ensure_user(&login).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let engine_url = format!("http://{}", listener.local_addr().unwrap());
    let app = gitea
        .ok(
            "POST",
            "/user/applications/oauth2",
            Some(serde_json::json!({
                "name": support::real_gitea::unique("plue-sign-in"),
                "redirect_uris": [format!("{engine_url}/sign-in/gitea/callback")],
                "confidential_client": true,
            })),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::admin_config("registration-token-of-sign-in", ADMIN);
    config.sign_in.gitea = Some(ForgeSettings {
        url: base_url("--gitea-sign-in-url", &gitea.url).unwrap(),
        api_url: base_url("--gitea-sign-in-url", &gitea.api_url()).unwrap(),
        client_id: app["client_id"].as_str().unwrap().into(),
        client_secret: ClientSecret(app["client_secret"].as_str().unwrap().into()),
    });
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let engine = plue_server::server::start(store, listener, config, None)
        .await
        .unwrap();
    let site = Site { engine, _dir: dir };

    // Gitea asks the person to sign in there first.
    let mut browser = Browser::new();
    let page = site.sign_in(&mut browser, "gitea").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (action, mut fields) = support::sign_in::form_fields(&page.body, "/user/login")
        .unwrap_or_else(|| panic!("Gitea's login form at {}: {}", page.url, page.body));
    fields.retain(|(name, _)| name == "_csrf" || name == "redirect_to");
    fields.push(("user_name".into(), login.clone()));
    fields.push(("password".into(), support::real_gitea::USER_PASSWORD.into()));
    let request = browser
        .http()
        .post(page.url.join(&action).unwrap())
        .form(&fields);
    let answer = browser.send(request).await;
    assert!(answer.status().is_redirection(), "{}", answer.status());
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    let page = browser
        .visit(page.url.join(&location).unwrap().as_str())
        .await;
    // Then to authorize the application.
    let page = if page.url.path().starts_with("/sign-in/") {
        page
    } else {
        assert_eq!(page.status, 200, "{}", page.body);
        let (action, mut fields) = support::sign_in::form_fields(&page.body, "/login/oauth/grant")
            .unwrap_or_else(|| panic!("Gitea's consent form at {}: {}", page.url, page.body));
        fields.retain(|(name, _)| name != "granted");
        fields.push(("granted".into(), "true".into()));
        let request = browser
            .http()
            .post(page.url.join(&action).unwrap())
            .form(&fields);
        let answer = browser.send(request).await;
        assert!(answer.status().is_redirection(), "{}", answer.status());
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        browser
            .visit(page.url.join(&location).unwrap().as_str())
            .await
    };
    assert_eq!(page.url.path(), "/sign-in/gitea/callback");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("Signed in as {login}")),
        "{}",
        page.body
    );
    assert!(site.signed_in(&mut browser).await);
    let user = site.store().user_by_name(&login).await.unwrap().unwrap();
    assert_eq!(
        site.store()
            .user_of_forge_login("gitea", &login)
            .await
            .unwrap(),
        Some(user.id)
    );
}
