//! The access rules against a real store (SQLite, and PostgreSQL when a server can be
//! started): a test per role, and the attacks of issue 29 on identity — a token's name,
//! a narrowed token, a revoked token's session, a disabled user.
//!
//! Why one file past ~600 lines: a test per role and attack on the access rules against one
//! store fixture.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use plue_store::testing::{create_repo as repo, stores};
use plue_store::{NewToken, NewUser, Store, Triggerer};
use plue_vault::tokens;

use super::*;
use crate::http_error::ApiError;
use crate::testing::{user_with_token, TokenScope};

const ADMIN: &str = "the-admin-token";

/// A run (one that did not evaluate: it has no steps, which these rules never read).
async fn any_run(store: &Store) -> i64 {
    run_rerunning(store, None).await
}

/// A run, re-running `rerun_of` when given.
async fn run_rerunning(store: &Store, rerun_of: Option<i64>) -> i64 {
    let plan = evaluator::plan::Plan::new("p", vec![]);
    let new = plue_store::NewRun {
        workflow_path: "/w/p.plue.py",
        event: "push",
        git_ref: "main",
        plan_hash: "",
        rerun_of,
        ..plue_store::testing::local_run(&plan, "{}")
    };
    store.create_failed_run(&new, "no").await.unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn status(result: Result<(), ApiError>) -> Option<StatusCode> {
    match result {
        Ok(()) => None,
        Err(ApiError::Client(status, _)) => Some(status),
        Err(ApiError::Internal(e)) => panic!("internal error: {e:#}"),
    }
}

#[tokio::test]
async fn each_role_may_do_exactly_its_share_of_a_repository() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let hello = repo(&store, "octo/hello").await;
        let other = repo(&store, "octo/private").await;
        let mut callers = vec![("anonymous", Caller::Anonymous, None)];
        for role in Role::ALL {
            let (id, _, token) = user_with_token(&store, role.as_str(), Default::default()).await;
            store.grant_role(hello, id, role.as_str()).await.unwrap();
            let caller = resolver.from_headers(&bearer(&token)).await.unwrap();
            callers.push((role.as_str(), caller, Some(role)));
        }
        let admin = resolver.from_headers(&bearer(ADMIN)).await.unwrap();
        assert!(admin.is_admin());
        callers.push(("admin", admin, Some(Role::Maintainer)));
        for (who, caller, held) in &callers {
            for wanted in Role::ALL {
                let got = status(caller.require_repo(&store, Some(hello), wanted).await);
                let expected = match (who, held) {
                    (_, Some(held)) if *held >= wanted => None,
                    (&"anonymous", _) => Some(StatusCode::UNAUTHORIZED),
                    _ => Some(StatusCode::FORBIDDEN),
                };
                assert_eq!(got, expected, "{who} asking for {wanted} on octo/hello");
                // A repository the caller holds nothing on does not exist for it.
                let hidden = status(caller.require_repo(&store, Some(other), wanted).await);
                let expected = match *who {
                    "admin" => None,
                    "anonymous" => Some(StatusCode::UNAUTHORIZED),
                    _ => Some(StatusCode::NOT_FOUND),
                };
                assert_eq!(
                    hidden, expected,
                    "{who} asking for {wanted} on octo/private"
                );
            }
            // Local runs are the admins'.
            let local = status(caller.require_repo(&store, None, Role::Reader).await);
            assert_eq!(
                local.is_none(),
                *who == "admin",
                "{who} reading a local run"
            );
            assert_eq!(
                caller.require_admin().is_ok(),
                *who == "admin",
                "{who} as admin"
            );
            let readable = caller.readable(&store).await.unwrap();
            assert_eq!(
                readable.allows(Some(hello)),
                *who != "anonymous",
                "{who} lists"
            );
            assert_eq!(readable.allows(Some(other)), *who == "admin", "{who} lists");
        }
        // Public reads open reading, and nothing else.
        store.set_public_read(hello, true).await.unwrap();
        for (who, caller, held) in &callers {
            assert_eq!(
                status(caller.require_repo(&store, Some(hello), Role::Reader).await),
                None,
                "{who} reading a public repository"
            );
            if held.is_none() {
                assert!(
                    caller
                        .require_repo(&store, Some(hello), Role::Writer)
                        .await
                        .is_err(),
                    "{who} writing to a public repository"
                );
            }
        }
        assert!(Caller::Anonymous
            .readable(&store)
            .await
            .unwrap()
            .allows(Some(hello)));
    }
}

#[tokio::test]
async fn a_token_is_never_wider_than_its_user_and_its_name_is_no_identity() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let hello = repo(&store, "octo/hello").await;
        let other = repo(&store, "octo/other").await;
        // A writer names its token "admin": it is still the writer.
        let (mallory, _, _) = user_with_token(&store, "mallory", Default::default()).await;
        store.grant_role(hello, mallory, "writer").await.unwrap();
        let token = tokens::new_token().unwrap();
        store
            .create_user_token(&NewToken {
                user_id: mallory,
                name: "admin",
                token_hash: &tokens::hash_token(&token),
                max_role: Some("maintainer"),
                repos: None,
                expires_at: None,
            })
            .await
            .unwrap();
        let caller = resolver.from_headers(&bearer(&token)).await.unwrap();
        assert_eq!(caller.name(), "mallory");
        assert!(!caller.is_admin());
        assert_eq!(
            caller.role_on(&store, hello).await.unwrap(),
            Some(Role::Writer),
            "a max_role above the user's own grants nothing more"
        );
        // Narrowed: a reader token, and a token for one repository.
        let (_, _, reader) = user_with_token(
            &store,
            "mallory",
            TokenScope {
                max_role: Some("reader"),
                ..Default::default()
            },
        )
        .await;
        let reader = resolver.from_headers(&bearer(&reader)).await.unwrap();
        assert_eq!(
            reader.role_on(&store, hello).await.unwrap(),
            Some(Role::Reader)
        );
        // An admin's narrowed token is not an admin.
        let admin_id = store.user_by_name("admin").await.unwrap().unwrap().id;
        store
            .grant_role(other, mallory, "maintainer")
            .await
            .unwrap();
        let one_repo = tokens::new_token().unwrap();
        store
            .create_user_token(&NewToken {
                user_id: admin_id,
                name: "ci",
                token_hash: &tokens::hash_token(&one_repo),
                max_role: None,
                repos: Some(r#"["octo/hello"]"#),
                expires_at: None,
            })
            .await
            .unwrap();
        let narrowed = resolver.from_headers(&bearer(&one_repo)).await.unwrap();
        assert!(!narrowed.is_admin(), "a narrowed admin token is no admin");
        assert_eq!(
            narrowed.role_on(&store, hello).await.unwrap(),
            Some(Role::Maintainer)
        );
        assert_eq!(narrowed.role_on(&store, other).await.unwrap(), None);
        assert!(!narrowed.readable(&store).await.unwrap().allows(Some(other)));
    }
}

#[tokio::test]
async fn revoked_expired_and_disabled_credentials_open_nothing_sessions_included() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let (alice, _, token) = user_with_token(&store, "alice", Default::default()).await;
        let (session, caller) = resolver.open_session(&token).await.unwrap().unwrap();
        assert_eq!(caller.user_id(), Some(alice));
        assert_ne!(session, token, "the cookie never holds the token");
        assert_eq!(
            resolver
                .from_session(&session)
                .await
                .unwrap()
                .unwrap()
                .name(),
            "alice"
        );
        let id = store.list_tokens(Some(alice)).await.unwrap()[0].id;
        assert!(store.revoke_token(id).await.unwrap());
        assert!(resolver.from_session(&session).await.unwrap().is_none());
        let refused = resolver.from_headers(&bearer(&token)).await.unwrap_err();
        assert!(matches!(
            refused,
            ApiError::Client(StatusCode::UNAUTHORIZED, _)
        ));
        // Expired.
        let (_, _, old) = user_with_token(
            &store,
            "alice",
            TokenScope {
                expires_at: Some(1),
                ..Default::default()
            },
        )
        .await;
        assert!(resolver.from_headers(&bearer(&old)).await.is_err());
        // Disabled: its live tokens and sessions stop.
        let (_, _, live) = user_with_token(&store, "alice", Default::default()).await;
        let (session, _) = resolver.open_session(&live).await.unwrap().unwrap();
        assert!(store.disable_user(alice).await.unwrap());
        assert!(resolver.from_headers(&bearer(&live)).await.is_err());
        assert!(resolver.from_session(&session).await.unwrap().is_none());
        // Signing out ends a session; a made-up session id is nobody.
        let (_, _, bob) = user_with_token(&store, "bob", Default::default()).await;
        let (session, _) = resolver.open_session(&bob).await.unwrap().unwrap();
        resolver.close_session(&session).await.unwrap();
        assert!(resolver.from_session(&session).await.unwrap().is_none());
        assert!(resolver.from_session("guess").await.unwrap().is_none());
        // No header is anonymous; a malformed one is refused.
        assert_eq!(
            resolver.from_headers(&HeaderMap::new()).await.unwrap(),
            Caller::Anonymous
        );
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(resolver.from_headers(&basic).await.is_err());
    }
}

#[tokio::test]
async fn gates_compare_users_groups_and_forge_logins_never_names_of_tokens() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let (alice, _, alice_token) = user_with_token(&store, "alice", Default::default()).await;
        let (bob, _, bob_token) = user_with_token(&store, "bob", Default::default()).await;
        let alice_caller = resolver.from_headers(&bearer(&alice_token)).await.unwrap();
        let bob_caller = resolver.from_headers(&bearer(&bob_token)).await.unwrap();
        let release = store.create_group("Release").await.unwrap();
        store.add_group_member(release, bob).await.unwrap();
        let run = any_run(&store).await;
        let named = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(alice_caller
            .is_named(&store, &named(&["ALICE"]))
            .await
            .unwrap());
        assert!(!alice_caller
            .is_named(&store, &named(&["@release"]))
            .await
            .unwrap());
        assert!(bob_caller
            .is_named(&store, &named(&["@release"]))
            .await
            .unwrap());
        assert!(!Caller::Anonymous
            .is_named(&store, &named(&["alice"]))
            .await
            .unwrap());
        // Alice pushed (her forge login), then asks to approve her own run.
        store
            .link_forge_login(alice, "github", "Alice-GH")
            .await
            .unwrap();
        store
            .record_trigger(
                run,
                &Triggerer {
                    name: "alice-gh".into(),
                    user_id: None,
                    forge_login: Some("github:alice-gh".into()),
                },
            )
            .await
            .unwrap();
        assert!(alice_caller.is_triggerer_of(&store, run).await.unwrap());
        assert!(!bob_caller.is_triggerer_of(&store, run).await.unwrap());
        let refused = alice_caller
            .may_decide(&store, run, &named(&["alice", "bob"]), SelfReview::Excluded)
            .await
            .unwrap();
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("started this run"));
        assert!(bob_caller
            .may_decide(&store, run, &named(&["alice", "bob"]), SelfReview::Excluded)
            .await
            .unwrap()
            .is_ok());
        // A second user cannot take a linked login.
        assert!(matches!(
            store.link_forge_login(bob, "github", "alice-gh").await,
            Err(plue_store::NameError::Taken(_))
        ));
        // Names are unique in any case; `admin` is taken by the installation's admin.
        for taken in ["ALICE", "Admin"] {
            assert!(matches!(
                store.create_user(&NewUser::person(taken)).await,
                Err(plue_store::NameError::Taken(_))
            ));
        }
    }
}

#[tokio::test]
async fn tokens_from_before_users_become_users_that_keep_working() {
    for (store, _dir) in stores().await {
        let hello = repo(&store, "octo/hello").await;
        // Rows as an engine before users wrote them.
        let old = tokens::new_token().unwrap();
        store
            .create_api_token("Deploy Bot", &tokens::hash_token(&old), None)
            .await
            .unwrap();
        let minted = tokens::new_token().unwrap();
        store
            .create_api_token(
                "admin",
                &tokens::hash_token(&minted),
                Some(&tokens::hash_token(&old)),
            )
            .await
            .unwrap();
        let carol = tokens::new_token().unwrap();
        store
            .create_api_token("carol", &tokens::hash_token(&carol), None)
            .await
            .unwrap();
        prepare(&store, true).await.unwrap();
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let deploy = resolver.from_headers(&bearer(&old)).await.unwrap();
        let minted = resolver.from_headers(&bearer(&minted)).await.unwrap();
        assert_eq!(
            deploy.user_id(),
            minted.user_id(),
            "a minted token follows its minter, whatever its name"
        );
        assert!(deploy.name().starts_with("legacy-"), "{}", deploy.name());
        assert!(!minted.is_admin());
        let carol = resolver.from_headers(&bearer(&carol)).await.unwrap();
        assert_eq!(carol.name(), "carol");
        assert_eq!(
            carol.role_on(&store, hello).await.unwrap(),
            Some(Role::Maintainer)
        );
        assert_eq!(store.repo_public_read(hello).await.unwrap(), Some(false));
        // Twice is once.
        prepare(&store, true).await.unwrap();
        assert_eq!(store.list_users().await.unwrap().len(), 3);
    }
}

/// Attack: an engine of the old version still serving during a rolling upgrade (one
/// PostgreSQL, replicas restarting one by one) mints tokens the old way — any name, no
/// user. A holder of one names it after a user the admin made meanwhile (`alice`, who
/// holds reader on one repository) and waits for the next restart's adoption.
#[tokio::test]
async fn a_legacy_token_named_like_an_existing_user_never_becomes_that_users() {
    for (store, _dir) in stores().await {
        let hello = repo(&store, "octo/hello").await;
        let other = repo(&store, "octo/other").await;
        let alice = store.create_user(&NewUser::person("alice")).await.unwrap();
        store.grant_role(hello, alice, "reader").await.unwrap();
        // An earlier start adopted this one already; a token it minted arrives later.
        let early = tokens::new_token().unwrap();
        store
            .create_api_token("carol", &tokens::hash_token(&early), None)
            .await
            .unwrap();
        prepare(&store, true).await.unwrap();
        let (old, minted_later, legacy_user) = (
            tokens::new_token().unwrap(),
            tokens::new_token().unwrap(),
            tokens::new_token().unwrap(),
        );
        store
            .create_api_token("ALICE", &tokens::hash_token(&old), None)
            .await
            .unwrap();
        store
            .create_api_token(
                "alice",
                &tokens::hash_token(&minted_later),
                Some(&tokens::hash_token(&early)),
            )
            .await
            .unwrap();
        // A user made by hand with the name a fallback would take.
        store
            .create_user(&NewUser::person("legacy-99"))
            .await
            .unwrap();
        store
            .create_api_token("legacy-99", &tokens::hash_token(&legacy_user), None)
            .await
            .unwrap();
        prepare(&store, true).await.unwrap();
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let old = resolver.from_headers(&bearer(&old)).await.unwrap();
        assert_ne!(old.user_id(), Some(alice), "{}", old.name());
        assert!(old.name().starts_with("legacy-"), "{}", old.name());
        let early = resolver.from_headers(&bearer(&early)).await.unwrap();
        let minted_later = resolver.from_headers(&bearer(&minted_later)).await.unwrap();
        assert_eq!(
            minted_later.user_id(),
            early.user_id(),
            "a token minted by one adopted at an earlier start follows it"
        );
        let squatted = resolver.from_headers(&bearer(&legacy_user)).await.unwrap();
        assert_ne!(squatted.name(), "legacy-99");
        // Alice gained nothing.
        assert_eq!(store.role_of(other, alice).await.unwrap(), None);
        assert_eq!(
            store.role_of(hello, alice).await.unwrap().as_deref(),
            Some("reader")
        );
    }
}

/// Attack: mallory (a writer) pushes onto carol's pull request from the same repository;
/// the `synchronize` run's author is carol, its sender mallory. With `exclude_triggerer`
/// mallory may not approve the code she pushed, whoever opened the pull request.
#[tokio::test]
async fn whoever_pushed_onto_a_pull_request_may_not_decide_its_run() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let (carol, _, _) = user_with_token(&store, "carol", Default::default()).await;
        let (mallory, _, mallory_token) =
            user_with_token(&store, "mallory", Default::default()).await;
        let (_, _, bob_token) = user_with_token(&store, "bob", Default::default()).await;
        store
            .link_forge_login(carol, "github", "carol-gh")
            .await
            .unwrap();
        store
            .link_forge_login(mallory, "github", "Mallory-GH")
            .await
            .unwrap();
        let run = any_run(&store).await;
        store
            .record_trigger(
                run,
                &Triggerer {
                    name: "carol-gh".into(),
                    user_id: Some(carol),
                    forge_login: Some("github:carol-gh github:mallory-gh".into()),
                },
            )
            .await
            .unwrap();
        let mallory_caller = resolver
            .from_headers(&bearer(&mallory_token))
            .await
            .unwrap();
        let bob_caller = resolver.from_headers(&bearer(&bob_token)).await.unwrap();
        let deciders = ["mallory".to_string(), "bob".to_string()];
        let refused = mallory_caller
            .may_decide(&store, run, &deciders, SelfReview::Excluded)
            .await
            .unwrap();
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("started this run"));
        assert!(bob_caller
            .may_decide(&store, run, &deciders, SelfReview::Excluded)
            .await
            .unwrap()
            .is_ok());
    }
}

/// Attack: alice pushed the code (run 1, hers); another writer re-runs it (run 2, theirs)
/// and alice approves the re-run of her own code. A re-run was started by whoever started
/// the run it re-runs too, all the way up.
#[tokio::test]
async fn a_rerun_is_still_started_by_who_started_the_run_it_reruns() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let (alice, _, alice_token) = user_with_token(&store, "alice", Default::default()).await;
        let (bob, _, bob_token) = user_with_token(&store, "bob", Default::default()).await;
        let (_, _, carol_token) = user_with_token(&store, "carol", Default::default()).await;
        let trigger = |user_id: i64, name: &str| Triggerer {
            name: name.into(),
            user_id: Some(user_id),
            forge_login: None,
        };
        let first = any_run(&store).await;
        store
            .record_trigger(first, &trigger(alice, "alice"))
            .await
            .unwrap();
        let second = run_rerunning(&store, Some(first)).await;
        store
            .record_trigger(second, &trigger(bob, "bob"))
            .await
            .unwrap();
        let third = run_rerunning(&store, Some(second)).await;
        store
            .record_trigger(third, &trigger(bob, "bob"))
            .await
            .unwrap();
        let alice = resolver.from_headers(&bearer(&alice_token)).await.unwrap();
        let bob = resolver.from_headers(&bearer(&bob_token)).await.unwrap();
        let carol = resolver.from_headers(&bearer(&carol_token)).await.unwrap();
        for run in [second, third] {
            assert!(alice.is_triggerer_of(&store, run).await.unwrap(), "{run}");
            assert!(bob.is_triggerer_of(&store, run).await.unwrap(), "{run}");
            assert!(!carol.is_triggerer_of(&store, run).await.unwrap(), "{run}");
        }
        assert!(!bob.is_triggerer_of(&store, first).await.unwrap());
    }
}

/// A token made with a token dies with it, down the line, on both backends; a revoked
/// token makes none.
#[tokio::test]
async fn revoking_a_token_revokes_the_tokens_made_with_it() {
    for (store, _dir) in stores().await {
        let (alice, _, _) = user_with_token(&store, "alice", Default::default()).await;
        let new = |hash: &'static str| NewToken {
            user_id: alice,
            name: "t",
            token_hash: hash,
            max_role: None,
            repos: None,
            expires_at: None,
        };
        let root = store.create_user_token(&new("h-root")).await.unwrap();
        let child = store
            .create_user_token_minted_by(&new("h-child"), root)
            .await
            .unwrap()
            .unwrap();
        let grandchild = store
            .create_user_token_minted_by(&new("h-grandchild"), child)
            .await
            .unwrap()
            .unwrap();
        let other = store.create_user_token(&new("h-other")).await.unwrap();
        assert!(store.revoke_token(root).await.unwrap());
        for id in [root, child, grandchild] {
            let token = store.token_by_id(id).await.unwrap().unwrap();
            assert!(token.revoked_at.is_some(), "{id}");
        }
        let other = store.token_by_id(other).await.unwrap().unwrap();
        assert!(other.revoked_at.is_none());
        assert_eq!(
            store
                .create_user_token_minted_by(&new("h-late"), root)
                .await
                .unwrap(),
            None,
            "a revoked token makes nothing"
        );
    }
}

/// A caller is resolved once per request; what lasts longer (a live log stream) asks
/// `still_valid` as it goes: a revoked or expired token, a disabled user and an admin who
/// is one no longer stop holding. The admin token and anonymous callers always hold.
#[tokio::test]
async fn credentials_that_stop_holding_are_no_longer_valid() {
    for (store, _dir) in stores().await {
        let resolver = Resolver::new(store.clone(), Some(ADMIN));
        let resolve = |token: String| {
            let resolver = resolver.clone();
            async move { resolver.from_headers(&bearer(&token)).await.unwrap() }
        };
        let (_, _, token) = user_with_token(&store, "alice", Default::default()).await;
        let alice = resolve(token).await;
        assert!(alice.still_valid(&store).await.unwrap());
        let Caller::Signed {
            token_id: Some(id), ..
        } = &alice
        else {
            panic!("{alice:?}");
        };
        assert!(store.revoke_token(*id).await.unwrap());
        assert!(!alice.still_valid(&store).await.unwrap(), "revoked");

        let soon = plue_store::now_ms() + 300;
        let expiring = TokenScope {
            expires_at: Some(soon),
            ..Default::default()
        };
        let (_, _, token) = user_with_token(&store, "dana", expiring).await;
        let dana = resolve(token).await;
        assert!(dana.still_valid(&store).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(!dana.still_valid(&store).await.unwrap(), "expired");

        let (bob_id, _, token) = user_with_token(&store, "bob", Default::default()).await;
        let bob = resolve(token).await;
        assert!(store.disable_user(bob_id).await.unwrap());
        assert!(!bob.still_valid(&store).await.unwrap(), "disabled");

        let (carol_id, _, token) = user_with_token(&store, "carol", Default::default()).await;
        assert!(store.set_user_admin(carol_id, true).await.unwrap());
        let carol = resolve(token).await;
        assert!(carol.is_admin() && carol.still_valid(&store).await.unwrap());
        assert!(store.set_user_admin(carol_id, false).await.unwrap());
        assert!(
            !carol.still_valid(&store).await.unwrap(),
            "no longer an admin"
        );

        let admin = resolve(ADMIN.to_string()).await;
        assert!(admin.still_valid(&store).await.unwrap());
        assert!(Caller::Anonymous.still_valid(&store).await.unwrap());
    }
}
