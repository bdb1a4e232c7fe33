//! What the lists say to a visitor who is not signed in on an engine with users: they show
//! only public repositories and their runs, so each says that signing in may show more,
//! with the sign-in link back to the list — and never "no runs yet, register a
//! repository", which is true only for an installation admin. Signed-in users who may not
//! register are not told to.

use axum::http::StatusCode;
use plue_store::{NewRun, RunRepo};

use super::tests::{bash, plan, repository, Fixture, Reply};
use crate::testing::{user_with_token, TokenScope};

/// The lists that hide what the caller may not read, with the sign-in link each offers
/// (`next` is the list itself, its filters kept).
const LISTS: &[(&str, &str)] = &[
    ("/", "/login?next=%2F"),
    ("/runs/rows", "/login?next=%2F"),
    ("/repos", "/login?next=%2Frepos"),
];

/// Sign-in is offered with a link back to the list, and registering is not.
fn says_sign_in(page: &Reply, uri: &str, link: &str) {
    assert_eq!(page.status, StatusCode::OK, "{uri}");
    assert!(
        page.body
            .contains(&format!("href=\"{link}\" id=\"sign-in-for-more\"")),
        "{uri}: {}",
        page.body
    );
    assert!(page.body.contains("Sign in</a> to see the"), "{uri}");
    assert_registers_nothing(page, uri);
}

fn assert_registers_nothing(page: &Reply, uri: &str) {
    for told in [
        "plue repo add",
        "Register a repository",
        "No runs yet.",
        "is registered",
    ] {
        assert!(
            !page.body.contains(told),
            "{uri} says {told:?}: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn a_signed_out_visitor_is_told_that_signing_in_may_show_more() {
    let fx = Fixture::new().await;
    // Only a private repository has runs.
    let (private_run, _) = repository(&fx).await;
    for (uri, link) in LISTS {
        let page = fx.get_anonymous(uri).await;
        assert!(!page.body.contains(&format!("data-run=\"{private_run}\"")));
        assert!(!page.body.contains("acme/app"), "{uri}");
        says_sign_in(&page, uri, link);
        assert!(page.body.contains("id=\"signed-out-empty\""), "{uri}");
    }
    let page = fx.get_anonymous("/runs/rows").await;
    assert!(page.body.contains("No public runs."), "{}", page.body);
    // Filters that match nothing: the filters' sentence, and sign-in back to them.
    let filtered = fx.get_anonymous("/?branch=main").await;
    assert!(filtered.body.contains("No runs match these filters"));
    assert!(filtered.body.contains("id=\"signed-out\""));
    says_sign_in(
        &filtered,
        "/?branch=main",
        "/login?next=%2F%3Fbranch%3Dmain",
    );

    // A signed-in user who holds no role and may not register is not told to register.
    let (_, _, token) = user_with_token(fx.store(), "stranger", TokenScope::default()).await;
    let (stranger, _) = fx.sign_in_with(&token).await;
    for (uri, _) in LISTS {
        let page = fx.get_with(uri, Some(&stranger)).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert_registers_nothing(&page, uri);
        assert!(!page.body.contains("sign-in-for-more"), "{uri}");
        assert!(!page.body.contains("acme/app"), "{uri}");
    }
    let page = fx.get_with("/", Some(&stranger)).await;
    assert!(page.body.contains("No runs yet that you may read."));

    // Some things show: a note above them says signing in may show more.
    let open = plue_store::testing::create_repo(fx.store(), "acme/open").await;
    fx.store().set_public_read(open, true).await.unwrap();
    let ci = plan("open-ci", vec![bash("build", &[])]);
    let json = serde_json::to_string(&ci).unwrap();
    let public_run = fx
        .executor
        .start_run(&NewRun {
            workflow_source: "acme/open",
            workflow_path: ".plue/ci.plue.py",
            repo: Some(RunRepo {
                repo_id: open,
                secrets_allowed: true,
            }),
            ..plue_store::testing::local_run(&ci, &json)
        })
        .await
        .unwrap();
    for (uri, link) in LISTS {
        let page = fx.get_anonymous(uri).await;
        assert!(page.body.contains("acme/open"), "{uri}");
        assert!(!page.body.contains("acme/app"), "{uri}");
        assert!(page.body.contains("id=\"signed-out\""), "{uri}");
        assert!(!page.body.contains("id=\"signed-out-empty\""), "{uri}");
        says_sign_in(&page, uri, link);
    }
    let page = fx.get_anonymous("/").await;
    assert!(page.body.contains(&format!("data-run=\"{public_run}\"")));

    // The admin sees everything, and no sign-in note.
    for (uri, _) in LISTS {
        let page = fx.get(uri).await;
        assert!(!page.body.contains("sign-in-for-more"), "{uri}");
        assert!(page.body.contains("acme/app"), "{uri}");
    }
}

#[tokio::test]
async fn only_an_admin_is_told_to_register_a_repository() {
    let fx = Fixture::new().await;
    let runs = fx.get("/").await;
    assert!(runs.body.contains("No runs yet."), "{}", runs.body);
    assert!(runs.body.contains("plue repo add"));
    let repos = fx.get("/repos").await;
    assert!(repos.body.contains("No repository is registered"));
    assert!(repos.body.contains("plue repo add"));
    for page in [&runs, &repos] {
        assert!(!page.body.contains("sign-in-for-more"));
    }
}
