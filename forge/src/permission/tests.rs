//! Tests of `permission`: each forge's answer mapped to one level, failures kept as
//! unknown (and shorter), the engine's and an App's own identity.

use super::*;

fn answer(permission: &str, role_name: Option<&str>) -> PermissionAnswer {
    PermissionAnswer {
        permission: permission.into(),
        role_name: role_name.map(str::to_string),
    }
}

#[test]
fn each_forge_answer_maps_to_one_level() {
    let github = |p, r| Permission::of_answer(Forge::GitHub, &answer(p, r));
    assert_eq!(github("admin", Some("admin")), Permission::Admin);
    assert_eq!(github("write", Some("maintain")), Permission::Maintain);
    assert_eq!(github("write", Some("write")), Permission::Write);
    assert_eq!(github("read", Some("triage")), Permission::Read);
    assert_eq!(github("none", None), Permission::None);
    assert_eq!(github("owner", None), Permission::None, "not GitHub's word");
    let gitea = |p| Permission::of_answer(Forge::Gitea, &answer(p, None));
    assert_eq!(gitea("owner"), Permission::Admin);
    assert_eq!(gitea("admin"), Permission::Admin);
    assert_eq!(gitea("write"), Permission::Write);
    assert_eq!(gitea("read"), Permission::Read);
    assert_eq!(gitea("none"), Permission::None);
    assert_eq!(gitea("WRITE"), Permission::None, "unknown is nothing");
}

/// A forge answering `GET /user` with `answers` in turn (the last one from then on);
/// its API URL and the number of requests it received.
async fn forge(
    answers: Vec<(u16, &'static str)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let (status, body) = answers[n.min(answers.len() - 1)];
        async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                body.to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

fn repo(api_url: Option<&str>, token: Option<&str>) -> RepoRow {
    RepoRow {
        id: 7,
        name: "octo/hello".into(),
        clone_url: "https://forge.example/octo/hello.git".into(),
        forge: "github".into(),
        webhook_secret: "plain:secret".into(),
        api_url: api_url.map(str::to_string),
        api_token: token.map(|t| format!("plain:{t}")),
        default_branch: None,
        created_at: 0,
        public_read: None,
        forge_repo_id: None,
    }
}

fn asked(counter: &std::sync::atomic::AtomicUsize) -> usize {
    counter.load(std::sync::atomic::Ordering::SeqCst)
}

/// Counts the warnings logged on this thread while it is the default subscriber.
struct Warnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn only_a_known_login_is_the_engine_and_unknown_may_be_anyone() {
    let known = EngineIdentity::Known("Plue-Bot".into());
    assert!(known.might_be(Some("plue-bot")));
    assert!(!known.might_be(Some("alice")));
    assert!(!known.might_be(None));
    assert_eq!(
        (known.state(), known.login(), known.reason()),
        ("known", Some("Plue-Bot"), None)
    );
    let none = EngineIdentity::NoToken;
    assert!(!none.might_be(Some("plue-bot")) && !none.might_be(None));
    assert_eq!((none.state(), none.login()), ("no_token", None));
    let unknown = EngineIdentity::Unknown("HTTP 403".into());
    assert!(unknown.might_be(Some("alice")) && unknown.might_be(None));
    assert_eq!(
        (unknown.state(), unknown.login(), unknown.reason()),
        ("unknown", None, Some("HTTP 403"))
    );
}

#[tokio::test]
async fn no_token_asks_nothing_and_every_failure_is_unknown() {
    let vault = ForgeAuth::personal(plue_vault::Vault::unkeyed());
    let permissions = Permissions::default();
    let (url, counter) = forge(vec![(200, r#"{"login":"plue-bot"}"#)]).await;
    assert_eq!(
        permissions
            .engine_identity(&vault, &repo(Some(&url), None))
            .await,
        EngineIdentity::NoToken
    );
    assert_eq!(asked(&counter), 0, "no token: nothing to ask");
    assert_eq!(
        permissions
            .engine_identity(&vault, &repo(Some(&url), Some("t")))
            .await,
        EngineIdentity::Known("plue-bot".into())
    );
    for (status, body, says) in [
        (
            403,
            r#"{"message":"Resource not accessible by integration"}"#,
            "HTTP 403",
        ),
        (500, "oops", "HTTP 500"),
        (502, "", "HTTP 502"),
        (404, r#"{"message":"Not Found"}"#, "HTTP 404"),
        (401, r#"{"message":"Bad credentials"}"#, "HTTP 401"),
        (200, "<html>a proxy</html>", "unexpected answer"),
        (200, r#"{"id": 1}"#, "unexpected answer"),
        (200, r#"{"login": " "}"#, "names no login"),
    ] {
        let (url, _) = forge(vec![(status, body)]).await;
        let identity = Permissions::default()
            .engine_identity(&vault, &repo(Some(&url), Some("t0ken")))
            .await;
        let why = identity.reason().unwrap_or_else(|| panic!("{identity:?}"));
        assert!(why.contains(says), "{status} {body}: {why}");
        assert!(!why.contains("t0ken"), "{why}");
        assert!(identity.might_be(Some("anyone")));
    }
    // Nobody listens; no API to ask (a Gitea repository on a path, no api_url).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let identity = Permissions::default()
        .engine_identity(&vault, &repo(Some(&closed), Some("t")))
        .await;
    assert_eq!(identity.state(), "unknown", "{identity:?}");
    let mut local = repo(None, Some("t"));
    local.forge = "gitea".into();
    local.clone_url = "/srv/git/hello".into();
    let identity = Permissions::default().engine_identity(&vault, &local).await;
    assert!(
        identity.reason().is_some_and(|why| why.contains("api_url")),
        "{identity:?}"
    );
}

#[tokio::test]
async fn a_failure_is_kept_shorter_than_an_answer_and_warned_once_per_asking() {
    assert!(FAILURE_CACHE_FOR < CACHE_FOR);
    let warnings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _logs = tracing::subscriber::set_default(Warnings(warnings.clone()));
    let vault = ForgeAuth::personal(plue_vault::Vault::unkeyed());
    let (url, counter) = forge(vec![
        (
            403,
            r#"{"message":"Resource not accessible by integration"}"#,
        ),
        (500, "down"),
        (200, r#"{"login":"plue-bot"}"#),
    ])
    .await;
    let short = Duration::from_millis(200);
    let permissions = Permissions {
        identity_for: (Duration::from_secs(3600), short),
        ..Permissions::default()
    };
    let repo = repo(Some(&url), Some("t"));
    for _ in 0..3 {
        let identity = permissions.engine_identity(&vault, &repo).await;
        assert!(identity.reason().unwrap().contains("403"), "{identity:?}");
    }
    assert_eq!(asked(&counter), 1, "a failure is kept");
    assert_eq!(warnings.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    let identity = permissions.engine_identity(&vault, &repo).await;
    assert!(identity.reason().unwrap().contains("500"), "{identity:?}");
    assert_eq!(asked(&counter), 2, "... for a short while");
    assert_eq!(warnings.load(std::sync::atomic::Ordering::SeqCst), 2);
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    for _ in 0..3 {
        assert_eq!(
            permissions.engine_identity(&vault, &repo).await,
            EngineIdentity::Known("plue-bot".into())
        );
    }
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    assert_eq!(
        permissions.engine_identity(&vault, &repo).await,
        EngineIdentity::Known("plue-bot".into())
    );
    assert_eq!(asked(&counter), 3, "an answer is kept longer");
    assert_eq!(warnings.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Another token (the repository was changed): asked again at once.
    let mut changed = repo.clone();
    changed.api_token = Some("plain:another".into());
    permissions.engine_identity(&vault, &changed).await;
    assert_eq!(asked(&counter), 4);
}

// An App's installation token cannot say who it is (`GET /user` is 403): the App's JWT
// asks `GET /app` instead, and its bot is certain.
#[tokio::test]
async fn an_apps_identity_is_its_bot() {
    let (url, counter) = forge(vec![(200, r#"{"id":7,"slug":"plue-app"}"#)]).await;
    let app = crate::auth::GitHubApp::new(7, testkit::forge::app::APP_KEY_PEM)
        .unwrap()
        .with_api_url(Some(url.clone()));
    let auth = ForgeAuth::new(plue_vault::Vault::unkeyed(), Some(app));
    let permissions = Permissions::default();
    let repo = repo(Some(&url), None);
    for _ in 0..2 {
        assert_eq!(
            permissions.engine_identity(&auth, &repo).await,
            EngineIdentity::Known("plue-app[bot]".into())
        );
    }
    assert_eq!(asked(&counter), 1);
    // A personal token still wins over the App.
    let (url, _) = forge(vec![(200, r#"{"login":"plue-bot"}"#)]).await;
    assert_eq!(
        permissions
            .engine_identity(&auth, &super::tests::repo(Some(&url), Some("t")))
            .await,
        EngineIdentity::Known("plue-bot".into())
    );
}

#[test]
fn who_meets_which_authors() {
    for (association, write) in [
        ("OWNER", true),
        ("MEMBER", true),
        ("COLLABORATOR", true),
        ("CONTRIBUTOR", false),
        ("FIRST_TIME_CONTRIBUTOR", false),
        ("FIRST_TIMER", false),
        ("MANNEQUIN", false),
        ("NONE", false),
        ("owner", false),
    ] {
        let p = Permission::of_association(association);
        assert_eq!(p.meets(Authors::Write), write, "{association}");
        assert!(
            !p.meets(Authors::Maintain),
            "{association}: never more than write"
        );
    }
    assert!(Permission::of_plue(true, None).meets(Authors::Admin));
    assert!(Permission::of_plue(false, Some("maintainer")).meets(Authors::Maintain));
    assert!(!Permission::of_plue(false, Some("maintainer")).meets(Authors::Admin));
    assert!(Permission::of_plue(false, Some("writer")).meets(Authors::Write));
    assert!(!Permission::of_plue(false, Some("reader")).meets(Authors::Write));
    assert!(!Permission::of_plue(false, None).meets(Authors::Write));
}
