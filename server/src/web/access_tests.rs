//! Who sees what in the dashboard, per role — anonymous, reader, writer, maintainer, admin
//! and a user holding roles only on another repository — and the attacks on its sessions:
//! the cookie never carries the token, a revoked token's session, an expired one, one
//! signed out, a forged one, and a private repository's runs in another user's list and
//! live stream.
//!
//! Why one file past ~600 lines: who sees what per role on one dashboard fixture; the role
//! matrix reads in one place.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use plue_store::events::Event;
use plue_store::testing::Sql;
use plue_types::status::RunState;
use plue_vault::tokens;
use tower::ServiceExt;

use super::tests::{bash, plan, repository, Fixture, Reply, ADMIN};
use crate::testing::{user_with_token, TokenScope};

/// A signed-in browser: its `Cookie` header and CSRF token.
struct Browser {
    who: &'static str,
    cookie: Option<String>,
    csrf: String,
}

impl Browser {
    fn anonymous() -> Browser {
        Browser {
            who: "anonymous",
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn get(&self, fx: &Fixture, uri: &str) -> Reply {
        fx.get_with(uri, self.cookie.as_deref()).await
    }

    async fn post(&self, fx: &Fixture, uri: &str, form: &str) -> Reply {
        let form = match form {
            "" => format!("csrf={}", self.csrf),
            _ => format!("csrf={}&{form}", self.csrf),
        };
        fx.post_form(uri, &form, self.cookie.as_deref(), None).await
    }
}

/// User `name` (made if new) holding `role` on `repo` (if any), and a fresh token of it:
/// (token id, token).
async fn user_token(fx: &Fixture, name: &str, role: Option<(i64, &str)>) -> (i64, String) {
    let store = fx.store();
    let (id, token_id, token) = user_with_token(store, name, TokenScope::default()).await;
    if let Some((repo, role)) = role {
        store.grant_role(repo, id, role).await.unwrap();
    }
    (token_id, token)
}

async fn browser(fx: &Fixture, who: &'static str, token: &str) -> Browser {
    let (cookie, csrf) = fx.sign_in_with(token).await;
    Browser {
        who,
        cookie: Some(cookie),
        csrf,
    }
}

/// The id of `acme/app`, the repository [`repository`] registers.
async fn acme_id(fx: &Fixture) -> i64 {
    fx.store()
        .repo_by_name("acme/app")
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn other_repo(fx: &Fixture, name: &str) -> i64 {
    plue_store::testing::create_repo(fx.store(), name).await
}

/// What a caller gets: shown (200), hidden as missing (404), or asked to sign in (401).
fn expect(who: &str, reads: bool) -> StatusCode {
    match who {
        "anonymous" => StatusCode::UNAUTHORIZED,
        _ if reads => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

#[tokio::test]
async fn each_role_sees_and_may_do_exactly_its_share() {
    let fx = Fixture::new().await;
    let (ci_run, _broken) = repository(&fx).await;
    let acme = acme_id(&fx).await;
    let other = other_repo(&fx, "acme/other").await;
    let local = fx.start(&plan("local-only", vec![bash("a", &[])])).await;
    let mut browsers = vec![Browser::anonymous()];
    for (who, role) in [
        ("reader", Some((acme, "reader"))),
        ("writer", Some((acme, "writer"))),
        ("maintainer", Some((acme, "maintainer"))),
        ("outsider", Some((other, "maintainer"))),
    ] {
        let (_, token) = user_token(&fx, who, role).await;
        browsers.push(browser(&fx, who, &token).await);
    }
    browsers.push(browser(&fx, "admin", ADMIN).await);
    for b in &browsers {
        let who = b.who;
        let reads = matches!(who, "reader" | "writer" | "maintainer" | "admin");
        let writes = matches!(who, "writer" | "maintainer" | "admin");
        // The runs list and its polled rows: the repository's runs only to its readers,
        // the local run only to the admin.
        for uri in ["/", "/runs/rows"] {
            let list = b.get(&fx, uri).await;
            assert_eq!(list.status, StatusCode::OK, "{who} {uri}");
            assert_eq!(
                list.body.contains(&format!("data-run=\"{ci_run}\"")),
                reads,
                "{who} {uri}"
            );
            assert_eq!(
                list.body.contains(&format!("data-run=\"{local}\"")),
                who == "admin",
                "{who} {uri}"
            );
        }
        let list = b.get(&fx, "/").await;
        assert_eq!(list.body.contains("local-only"), who == "admin", "{who}");
        // A run's pages: shown to readers, the missing run's 404 to others.
        for uri in [
            format!("/runs/{ci_run}"),
            format!("/runs/{ci_run}/live"),
            format!("/runs/{ci_run}/timeline"),
            format!("/runs/{ci_run}/timeline/live"),
            format!("/runs/{ci_run}/steps/build"),
            format!("/runs/{ci_run}/steps/build/raw"),
            format!("/runs/{ci_run}/steps/build/stream"),
        ] {
            let page = b.get(&fx, &uri).await;
            assert_eq!(
                page.status,
                expect(who, reads),
                "{who} {uri}: {}",
                page.body
            );
            if !reads {
                let missing = b.get(&fx, "/runs/99999").await;
                assert_eq!(missing.status, page.status, "{who} {uri}");
                if who != "anonymous" {
                    // The same page as a missing run's, but for the number.
                    assert_eq!(
                        page.body.replace(&format!("No run {ci_run}."), "No run N."),
                        missing.body.replace("No run 99999.", "No run N."),
                        "{who} {uri}"
                    );
                }
            }
        }
        let local_page = b.get(&fx, &format!("/runs/{local}")).await;
        assert_eq!(local_page.status, expect(who, who == "admin"), "{who}");
        // The actions offered: writers only.
        if reads {
            let page = b.get(&fx, &format!("/runs/{ci_run}")).await;
            assert_eq!(page.body.contains("id=\"cancel\""), writes, "{who}");
            let repo = b.get(&fx, "/repos/acme/app").await;
            assert_eq!(repo.status, StatusCode::OK, "{who}");
            assert_eq!(repo.body.contains("class=\"dispatch\""), writes, "{who}");
            assert!(!repo.body.contains("to run this workflow by hand"), "{who}");
        }
        // The repositories.
        let repos = b.get(&fx, "/repos").await;
        assert_eq!(repos.status, StatusCode::OK, "{who}");
        assert_eq!(repos.body.contains("/repos/acme/app\""), reads, "{who}");
        assert_eq!(
            repos.body.contains("/repos/acme/other\""),
            matches!(who, "outsider" | "admin"),
            "{who}"
        );
        let repo = b.get(&fx, "/repos/acme/app").await;
        assert_eq!(repo.status, expect(who, reads), "{who}");
        let missing = b.get(&fx, "/repos/acme/nope").await;
        assert_eq!(missing.status, expect(who, false), "{who}");
        // Installation-wide: any signed-in user.
        let runners = b.get(&fx, "/runners").await;
        assert_eq!(runners.status, expect(who, true), "{who}");
        // The forms, posted anyway: the API decides as for this user.
        let dispatch = b
            .post(
                &fx,
                "/repos/acme/app/dispatch",
                "workflow=.plue%2Fci.plue.py",
            )
            .await;
        let expected = match who {
            // No session, no CSRF token to match.
            "anonymous" => StatusCode::FORBIDDEN,
            "outsider" => StatusCode::NOT_FOUND,
            "reader" => StatusCode::FORBIDDEN,
            // Allowed: it reaches the dispatch, which has no evaluator here.
            _ => StatusCode::NOT_IMPLEMENTED,
        };
        assert_eq!(dispatch.status, expected, "{who}: {}", dispatch.body);
        if !writes {
            let cancel = b.post(&fx, &format!("/runs/{ci_run}/cancel"), "").await;
            assert!(cancel.status.is_client_error(), "{who}: {}", cancel.status);
            let run = fx.store().run(ci_run).await.unwrap().unwrap();
            assert!(!run.cancel_requested, "{who} cancelled the run");
        }
    }
    let writer = browsers.iter().find(|b| b.who == "writer").unwrap();
    let cancel = writer
        .post(&fx, &format!("/runs/{ci_run}/cancel"), "")
        .await;
    assert_eq!(cancel.status, StatusCode::SEE_OTHER, "{}", cancel.body);
    let run = fx.store().run(ci_run).await.unwrap().unwrap();
    assert!(run.cancel_requested || run.status == RunState::Cancelled);
    // The audit trail names the writer, not a token.
    let actors: Vec<String> = fx
        .store()
        .audit_events(&plue_store::AuditFilter {
            run_id: Some(ci_run),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors, ["writer"], "{actors:?}");
}

#[tokio::test]
async fn the_cookie_holds_a_session_id_never_the_token() {
    let fx = Fixture::new().await;
    let acme = other_repo(&fx, "acme/app").await;
    let (_, token) = user_token(&fx, "alice", Some((acme, "reader"))).await;
    for token in [token.as_str(), ADMIN] {
        let reply = fx
            .post_form("/login", &format!("token={token}&next=%2F"), None, None)
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        let cookies = reply.set_cookies();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("plue_session="))
            .expect("a session cookie");
        for cookie in &cookies {
            assert!(!cookie.contains(token), "the token is in {cookie}");
            assert!(
                !cookie.contains(&tokens::hash_token(token)),
                "the token's hash is in {cookie}"
            );
        }
        assert!(
            session.contains("; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
            "{session}"
        );
        // http here: not `Secure` (a browser would drop it), which an https engine adds.
        assert!(!session.contains("Secure"), "{session}");
    }
}

#[tokio::test]
async fn a_session_ends_with_its_token_its_expiry_and_sign_out() {
    let fx = Fixture::new().await;
    let (run, _) = repository(&fx).await;
    let acme = acme_id(&fx).await;
    let run_page = format!("/runs/{run}");
    let readable = |reply: &Reply| reply.status == StatusCode::OK && reply.body.contains("ci");

    // Revoked: the session shows the sign-in page and cannot cancel.
    let (token_id, token) = user_token(&fx, "wendy", Some((acme, "writer"))).await;
    let wendy = browser(&fx, "wendy", &token).await;
    assert!(readable(&wendy.get(&fx, &run_page).await));
    assert!(fx.store().revoke_token(token_id).await.unwrap());
    let page = wendy.get(&fx, &run_page).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.body.contains("action=\"/login\""));
    let cancel = wendy.post(&fx, &format!("{run_page}/cancel"), "").await;
    assert_eq!(cancel.status, StatusCode::UNAUTHORIZED, "{}", cancel.body);
    assert!(!fx.store().run(run).await.unwrap().unwrap().cancel_requested);
    let list = wendy.get(&fx, "/").await;
    assert!(!list.body.contains(&format!("data-run=\"{run}\"")));

    // Expired: anonymous.
    let (_, token) = user_token(&fx, "ernie", Some((acme, "writer"))).await;
    let ernie = browser(&fx, "ernie", &token).await;
    assert!(readable(&ernie.get(&fx, &run_page).await));
    Sql::new("UPDATE sessions SET expires_at = $1")
        .bind(plue_store::now_ms() - 1)
        .execute(fx.store())
        .await;
    assert_eq!(
        ernie.get(&fx, &run_page).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Signed out: the old cookie, replayed, is anonymous.
    let (_, token) = user_token(&fx, "sam", Some((acme, "writer"))).await;
    let sam = browser(&fx, "sam", &token).await;
    assert!(readable(&sam.get(&fx, &run_page).await));
    let out = sam.post(&fx, "/logout", "").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert!(out.clears_cookie("plue_session"), "{:?}", out.set_cookies());
    assert_eq!(
        sam.get(&fx, &run_page).await.status,
        StatusCode::UNAUTHORIZED
    );
    let cancel = sam.post(&fx, &format!("{run_page}/cancel"), "").await;
    assert!(cancel.status.is_client_error());
    assert!(!fx.store().run(run).await.unwrap().unwrap().cancel_requested);

    // Forged ids: anonymous.
    for forged in [
        "plue_session=0000000000000000000000000000000000000000000000000000000000000000".to_string(),
        format!("plue_session={}", tokens::hash_token(ADMIN)),
        format!("plue_session={ADMIN}"),
    ] {
        let reply = fx.get_with(&run_page, Some(&forged)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{forged}");
        let runners = fx.get_with("/runners", Some(&forged)).await;
        assert_eq!(runners.status, StatusCode::UNAUTHORIZED, "{forged}");
    }
}

/// A (failed) run of `mallory/tools`, the repository `tools` (from [`other_repo`]).
async fn tools_run(fx: &Fixture, tools: i64) -> i64 {
    let plan = plan("t", vec![bash("a", &[])]);
    let run = plue_store::NewRun {
        workflow_source: "mallory/tools",
        workflow_path: ".plue/t.plue.py",
        event: "push",
        sha: "2",
        repo: Some(plue_store::RunRepo {
            repo_id: tools,
            secrets_allowed: true,
        }),
        ..plue_store::testing::local_run(&plan, "{}")
    };
    fx.store().create_failed_run(&run, "no").await.unwrap()
}

/// Reads `/live` as `cookie` until a hint arrives or 600 ms pass.
async fn hinted(fx: &Fixture, cookie: &str, send: impl FnOnce()) -> bool {
    hinted_within(fx, cookie, 600, send).await
}

#[tokio::test]
async fn a_private_repositorys_runs_reach_no_other_user() {
    let fx = Fixture::new().await;
    let (run, _) = repository(&fx).await;
    let other = other_repo(&fx, "mallory/tools").await;
    let (_, token) = user_token(&fx, "mallory", Some((other, "maintainer"))).await;
    let mallory = browser(&fx, "mallory", &token).await;
    let cookie = mallory.cookie.clone().unwrap();
    for uri in [
        "/".to_string(),
        "/runs/rows".to_string(),
        "/?repo=acme%2Fapp".to_string(),
        "/runs/rows?repo=acme%2Fapp".to_string(),
        "/repos".to_string(),
    ] {
        let reply = fx.get_with(&uri, Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert!(
            !reply.body.contains(&format!("data-run=\"{run}\"")),
            "{uri}"
        );
        // The filter shows back what was asked, nothing more.
        let asked = uri.starts_with("/?repo=");
        assert_eq!(
            reply.body.matches("acme/app").count(),
            usize::from(asked),
            "{uri} names the repository"
        );
    }
    // The live stream: the private run's changes never reach mallory; the admin's do.
    let events = fx.executor.events();
    let private = hinted(&fx, &cookie, || {
        events.send(Event::Step { run_id: run });
        events.send(Event::RunFinished { run_id: run });
    })
    .await;
    assert!(!private, "mallory was hinted at acme/app's run");
    let theirs = fx.start(&plan("tools", vec![bash("a", &[])])).await;
    // A run of mallory's own repository does reach mallory.
    let own = tools_run(&fx, other).await;
    assert!(
        hinted(&fx, &cookie, || {
            events.send(Event::Step { run_id: theirs });
            events.send(Event::Step { run_id: own });
        })
        .await,
        "mallory follows its own repository"
    );
    assert!(
        hinted(&fx, &fx.admin.0, || {
            events.send(Event::Step { run_id: run });
        })
        .await
    );
    // Anonymous: public repositories only (acme/app is private).
    assert!(
        !hinted(&fx, "", || {
            events.send(Event::Step { run_id: run });
        })
        .await
    );
}

#[tokio::test]
async fn a_public_repository_is_read_by_anyone_and_changed_by_its_writers() {
    let fx = Fixture::new().await;
    let (run, _) = repository(&fx).await;
    let acme = acme_id(&fx).await;
    fx.store().set_public_read(acme, true).await.unwrap();
    let (_, token) = user_token(&fx, "stranger", None).await;
    let stranger = browser(&fx, "stranger", &token).await;
    for b in [&Browser::anonymous(), &stranger] {
        for uri in [format!("/runs/{run}"), "/repos/acme/app".to_string()] {
            let page = b.get(&fx, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{} {uri}", b.who);
            assert!(!page.body.contains("id=\"cancel\""), "{} {uri}", b.who);
            assert!(!page.body.contains("class=\"dispatch\""), "{} {uri}", b.who);
        }
        let list = b.get(&fx, "/").await;
        assert!(
            list.body.contains(&format!("data-run=\"{run}\"")),
            "{}",
            b.who
        );
    }
    // The anonymous are offered to sign in; a signed-in reader is offered nothing.
    let page = Browser::anonymous().get(&fx, &format!("/runs/{run}")).await;
    assert!(page.body.contains("to cancel or re-run"));
    let page = stranger.get(&fx, &format!("/runs/{run}")).await;
    assert!(!page.body.contains("to cancel or re-run"));
    let cancel = stranger.post(&fx, &format!("/runs/{run}/cancel"), "").await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN, "{}", cancel.body);
    assert!(!fx.store().run(run).await.unwrap().unwrap().cancel_requested);
}

#[tokio::test]
async fn approval_buttons_are_offered_to_writers_only() {
    use evaluator::plan::{Action, ApprovalAction, Step};
    let fx = Fixture::new().await;
    let (_, _) = repository(&fx).await;
    let acme = acme_id(&fx).await;
    let gated = plan(
        "gated",
        vec![Step::new(
            "ship",
            Action::Approval(ApprovalAction {
                message: Some("Ship it?".into()),
                approvers: Vec::new(),
                exclude_triggerer: false,
            }),
        )],
    );
    let json = serde_json::to_string(&gated).unwrap();
    let run = fx
        .executor
        .start_run(&plue_store::NewRun {
            workflow_source: "acme/app",
            workflow_path: ".plue/gated.plue.py",
            event: "push",
            sha: "3",
            workspace: &plue_types::protocol::WorkspaceSource::Empty,
            repo: Some(plue_store::RunRepo {
                repo_id: acme,
                secrets_allowed: true,
            }),
            ..plue_store::testing::local_run(&gated, &json)
        })
        .await
        .unwrap();
    for (who, role, offered) in [
        ("reader", "reader", false),
        ("writer", "writer", true),
        ("maintainer", "maintainer", true),
    ] {
        let (_, token) = user_token(&fx, who, Some((acme, role))).await;
        let b = browser(&fx, who, &token).await;
        let page = b.get(&fx, &format!("/runs/{run}")).await;
        assert_eq!(page.status, StatusCode::OK, "{who}");
        assert!(page.body.contains("data-step=\"ship\""), "{who}");
        assert_eq!(
            page.body.contains("data-approve=\"ship\""),
            offered,
            "{who}: {}",
            page.body
        );
        assert!(!page.body.contains("to decide"), "{who}");
    }
    let admin = fx.get(&format!("/runs/{run}")).await;
    assert!(admin.body.contains("data-approve=\"ship\""));
}

/// Attack: a browser keeps `/live` open after its token was revoked, or after its role on
/// the repository was taken away, and goes on learning when that repository's runs
/// change. Before a hint the stream asks again (at most every second): the revoked one
/// ends, the demoted one hints no more. (Fails without the recheck: both were hinted.)
#[tokio::test]
async fn a_live_stream_stops_hinting_when_its_reader_may_no_longer_read() {
    let fx = Fixture::new().await;
    let tools = other_repo(&fx, "mallory/tools").await;
    let run = tools_run(&fx, tools).await;
    let events = fx.executor.events();
    let later = || {
        let events = events.clone();
        move || {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
                events.send(Event::Step { run_id: run });
            });
        }
    };
    let (token_id, token) = user_token(&fx, "mallory", Some((tools, "maintainer"))).await;
    let mallory = browser(&fx, "mallory", &token).await;
    let cookie = mallory.cookie.clone().unwrap();
    assert!(
        hinted_within(&fx, &cookie, 2000, later()).await,
        "the reader is hinted"
    );
    // Revoked while the stream is open.
    let revoke = {
        let store = fx.store().clone();
        let send = later();
        move || {
            tokio::spawn(async move {
                assert!(store.revoke_token(token_id).await.unwrap());
            });
            send();
        }
    };
    assert!(
        !hinted_within(&fx, &cookie, 2000, revoke).await,
        "a revoked token's stream went on"
    );
    // Demoted while the stream is open.
    let (_, token) = user_token(&fx, "mallory", None).await;
    let mallory = browser(&fx, "mallory", &token).await;
    let cookie = mallory.cookie.clone().unwrap();
    let demote = {
        let store = fx.store().clone();
        let user = store.user_by_name("mallory").await.unwrap().unwrap().id;
        let send = later();
        move || {
            tokio::spawn(async move {
                assert!(store.revoke_role(tools, user).await.unwrap());
            });
            send();
        }
    };
    assert!(
        !hinted_within(&fx, &cookie, 2000, demote).await,
        "a stream went on hinting at a repository its reader lost"
    );
}

/// Reads `/live` as `cookie`, calls `send`, and says whether a hint arrives within
/// `wait_ms` (keep-alive comments are no hints).
async fn hinted_within(fx: &Fixture, cookie: &str, wait_ms: u64, send: impl FnOnce()) -> bool {
    let response = fx
        .app
        .clone()
        .oneshot(
            Request::get("/live")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    send();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(frame))) => {
                if String::from_utf8_lossy(&frame).contains("event: changed") {
                    return true;
                }
            }
            Ok(_) => return false,
        }
    }
}
