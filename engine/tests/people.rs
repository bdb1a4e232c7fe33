//! Users, tokens, groups, forge logins and the audit trail through the API of an in-process
//! engine with an admin token — a test per route and role (the admin, the user itself,
//! another user, the anonymous), and the attacks of issue 29: an ordinary token making a
//! user named `admin` (in any case) or another's name, or a token of another user; a
//! narrowed token making a wider one; a revoked token and its dashboard session; a disabled
//! user's tokens. The last test runs the real `plue serve` and a push delivery: a user
//! linked to the pusher's forge login may not approve the push's gate with
//! `exclude_triggerer`.
//!
//! Why one file past ~600 lines: a test per route and role of one API family (users,
//! tokens, groups, logins, audit) on one fixture; the role matrix reads in one place.

use std::path::Path;
use std::time::Duration;

use crate::support;

use plue_server::server::RunningEngine;
use plue_store::{RunRepo, Store};
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-of-the-people-tests";

struct Api {
    engine: RunningEngine,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let config = support::admin_config("registration-token", ADMIN);
    let engine = support::start_in_process(dir.path(), config).await;
    Api {
        engine,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Api {
    fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    /// `method path` with `token` (none: anonymous) and a JSON `body`: status and JSON.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.engine.url);
        support::call_json(&self.http, method, &url, token, body.as_ref()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// `POST /api/users` as `token` of a user `name` of `kind`: status and body.
    async fn new_user(&self, token: Option<&str>, name: &str, kind: &str) -> (u16, Value) {
        let body = json!({"name": name, "kind": kind});
        self.post("/api/users", token, body).await
    }

    /// `DELETE /api/tokens/{id}` (revoking token `id`) as `token`: status and body.
    async fn revoke(&self, id: impl std::fmt::Display, token: Option<&str>) -> (u16, Value) {
        self.delete(&format!("/api/tokens/{id}"), token).await
    }

    /// `POST /api/tokens` (a token of the caller's) as `token` with `body`: status and body.
    async fn new_token(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        self.post("/api/tokens", token, body).await
    }

    /// The status of the dashboard's page `path` for the session `cookie`, redirects not
    /// followed.
    async fn page_status(&self, path: String, cookie: String) -> u16 {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}{path}", self.engine.url))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A token made through the API by `token` with `body`: (id, token).
    async fn mint(&self, token: &str, body: Value) -> (i64, String) {
        let (status, made) = self.new_token(Some(token), body).await;
        assert_eq!(status, 201, "{made}");
        (
            made["id"].as_i64().unwrap(),
            made["token"].as_str().unwrap().to_string(),
        )
    }
}

fn actions(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn users_are_made_by_admins_only_and_names_are_unique_in_any_case() {
    let api = api().await;
    let (_, _, alice) = support::user_with_token(api.store(), "alice", &[]).await;
    let admin = Some(ADMIN);

    let (status, bob) = api.new_user(admin, "Bob", "person").await;
    assert_eq!(status, 201, "{bob}");
    assert_eq!(
        (bob["name"].as_str(), bob["kind"].as_str()),
        (Some("Bob"), Some("person"))
    );
    assert_eq!(bob["admin"], false);
    let (status, _) = api.new_user(admin, "deploy-bot", "bot").await;
    assert_eq!(status, 201);

    // Taken names, in any case, and the admin's: 409; invalid ones: 400.
    let taken = ["bob", "BOB", "ALICE", "admin", "Admin", "ADMIN"].map(|n| (n, 409));
    let invalid = ["", "-x", "a b", "a/b", "ä", "x\u{202e}"].map(|n| (n, 400));
    for (name, expected) in taken.into_iter().chain(invalid) {
        let (status, body) = api.new_user(admin, name, "person").await;
        assert_eq!(status, expected, "{name:?}: {body}");
    }
    let (status, _) = api.new_user(admin, "carol", "robot").await;
    assert_eq!(status, 422);

    // The attack: an ordinary token making the admin, or a name of its choice.
    for name in ["admin", "Admin", "bob", "mallory"] {
        for (token, expected) in [(Some(alice.as_str()), 403), (None, 401)] {
            let (status, body) = api
                .post(
                    "/api/users",
                    token,
                    json!({"name": name, "kind": "person", "admin": true}),
                )
                .await;
            assert_eq!(status, expected, "{name} as {token:?}: {body}");
        }
    }
    assert!(api.store().user_by_name("mallory").await.unwrap().is_none());

    // Listing: the admin only.
    let (status, users) = api.get("/api/users", admin).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "Bob", "deploy-bot"]);
    assert_eq!(api.get("/api/users", Some(&alice)).await.0, 403);
    assert_eq!(api.get("/api/users", None).await.0, 401);
}

#[tokio::test]
async fn a_user_reads_itself_and_no_one_else() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let (_, _, alice) = support::user_with_token(store, "alice", &[(hello, "writer")]).await;
    let (_, _, bob) = support::user_with_token(store, "bob", &[]).await;

    let (status, me) = api.get("/api/user", Some(&alice)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["admin"], false);
    assert_eq!(
        me["roles"],
        json!([{"repository": "octo/hello", "role": "writer"}])
    );
    let (status, me) = api.get("/api/user", Some(ADMIN)).await;
    assert_eq!(
        (status, me["name"].as_str(), me["admin"].as_bool()),
        (200, Some("admin"), Some(true))
    );
    assert_eq!(api.get("/api/user", None).await.0, 401);
    assert_eq!(api.get("/api/user", Some("not-a-token")).await.0, 401);

    // Itself (in any case) and the admin read a user; another user learns nothing, not
    // even that it exists.
    for (path, token, expected) in [
        ("/api/users/alice", Some(alice.as_str()), 200),
        ("/api/users/ALICE", Some(alice.as_str()), 200),
        ("/api/users/alice", Some(ADMIN), 200),
        ("/api/users/alice", Some(bob.as_str()), 404),
        ("/api/users/nobody", Some(bob.as_str()), 404),
        ("/api/users/nobody", Some(ADMIN), 404),
        ("/api/users/alice", None, 401),
    ] {
        let (status, body) = api.get(path, token).await;
        assert_eq!(status, expected, "{path} as {token:?}: {body}");
    }
    let (_, shown) = api.get("/api/users/alice", Some(ADMIN)).await;
    assert_eq!(shown["roles"][0]["role"], "writer");
    let (_, hidden) = api.get("/api/users/alice", Some(&bob)).await;
    let (_, missing) = api.get("/api/users/nobody", Some(&bob)).await;
    assert_eq!(
        hidden["error"].as_str().unwrap().replace("alice", "X"),
        missing["error"].as_str().unwrap().replace("nobody", "X"),
        "the refusal says nothing a missing user's does not"
    );
}

#[tokio::test]
async fn tokens_are_the_callers_own_and_never_wider() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let other = support::create_named_repo(store, "octo/other").await;
    support::create_named_repo(store, "octo/hidden").await;
    let (_, _, alice) =
        support::user_with_token(store, "alice", &[(hello, "maintainer"), (other, "writer")]).await;
    support::user_with_token(store, "bob", &[]).await;

    // A token for oneself, shown once and then listed without it.
    let (status, made) = api.new_token(Some(&alice), json!({"name": "laptop"})).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["user"].as_str(), made["max_role"].as_str()),
        (Some("alice"), None)
    );
    let (status, listed) = api.get("/api/tokens", Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["user"] == "alice" && t.get("token").is_none()));
    assert!(!listed.to_string().contains(made["token"].as_str().unwrap()));

    // Not for another user, and not another's list: only the admin may.
    let (status, body) = api
        .post("/api/users/bob/tokens", Some(&alice), json!({"name": "x"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(api.get("/api/tokens?user=bob", Some(&alice)).await.0, 403);
    let (status, for_bob) = api
        .post(
            "/api/users/bob/tokens",
            Some(ADMIN),
            json!({"name": "ci", "max_role": "reader"}),
        )
        .await;
    assert_eq!(
        (status, for_bob["user"].as_str()),
        (201, Some("bob")),
        "{for_bob}"
    );
    let (status, bobs) = api.get("/api/tokens?user=bob", Some(ADMIN)).await;
    assert_eq!((status, bobs.as_array().unwrap().len()), (200, 2));
    assert_eq!(api.get("/api/tokens", None).await.0, 401);
    assert_eq!(api.new_token(None, json!({"name": "x"})).await.0, 401);

    // A repository the caller may not read is as missing as one that does not exist.
    for repo in ["octo/hidden", "octo/nothing"] {
        let (status, body) = api
            .new_token(Some(&alice), json!({"name": "x", "repos": [repo]}))
            .await;
        assert_eq!(status, 404, "{repo}: {body}");
    }

    // A narrowed token makes only tokens at most as narrow: nothing asked inherits it all,
    // more is refused.
    let (_, narrow) = api
        .mint(
            &alice,
            json!({"name": "ci", "max_role": "writer", "repos": ["octo/hello"], "expires_in_days": 2}),
        )
        .await;
    let (_, narrow_me) = api.get("/api/user", Some(&narrow)).await;
    assert_eq!(
        narrow_me["roles"],
        json!([{"repository": "octo/hello", "role": "writer"}])
    );
    // A repository beyond the token is one it may not read: as missing as any.
    for (wider, expected) in [
        (json!({"name": "w", "max_role": "maintainer"}), 403),
        (json!({"name": "w", "repos": ["octo/other"]}), 404),
        (
            json!({"name": "w", "repos": ["octo/hello", "octo/other"]}),
            404,
        ),
    ] {
        let (status, body) = api.new_token(Some(&narrow), wider.clone()).await;
        assert_eq!(status, expected, "{wider}: {body}");
    }
    let (status, child) = api
        .new_token(
            Some(&narrow),
            json!({"name": "child", "expires_in_days": 365}),
        )
        .await;
    assert_eq!(status, 201, "{child}");
    assert_eq!(child["max_role"], "writer");
    assert_eq!(child["repos"], json!(["octo/hello"]));
    let (_, tokens) = api.get("/api/tokens", Some(&alice)).await;
    let expiry = |name: &str| {
        tokens
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["expires_at"]
            .as_i64()
            .unwrap()
    };
    assert!(
        expiry("child") <= expiry("ci"),
        "it never outlives its maker"
    );
    let child = child["token"].as_str().unwrap();
    let (_, child_me) = api.get("/api/user", Some(child)).await;
    assert_eq!(child_me["roles"], narrow_me["roles"]);
    // A narrower one is fine.
    let (status, _) = api
        .new_token(Some(child), json!({"name": "r", "max_role": "reader"}))
        .await;
    assert_eq!(status, 201);

    // A narrowed token of the admin is no admin, and makes no admin token either.
    let (_, admin_reader) = api
        .mint(ADMIN, json!({"name": "reads", "max_role": "reader"}))
        .await;
    assert_eq!(api.get("/api/users", Some(&admin_reader)).await.0, 403);
    let (_, grandchild) = api.mint(&admin_reader, json!({"name": "again"})).await;
    assert_eq!(api.get("/api/users", Some(&grandchild)).await.0, 403);
    let (status, _) = api
        .post(
            "/api/users/bob/tokens",
            Some(&admin_reader),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 403);

    // Bad input.
    for body in [
        json!({"name": ""}),
        json!({"name": "ci\u{202e}nimda"}),
        json!({"name": "x", "expires_in_days": 0}),
        json!({"name": "x", "repos": []}),
        json!({"name": "x", "repos": ["../etc"]}),
    ] {
        let (status, answer) = api.new_token(Some(&alice), body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

#[tokio::test]
async fn revoking_a_token_ends_it_and_its_dashboard_session() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let (_, alice_token_id, alice) =
        support::user_with_token(store, "alice", &[(hello, "reader")]).await;
    let (_, bob_token_id, bob) = support::user_with_token(store, "bob", &[]).await;
    let plan = support::plan("deploy", vec![support::bash_step("build", "true")]);
    let run_id = support::start_plan_run(
        &api.engine.executor,
        "/w/deploy.plue.py",
        &plan,
        Some(RunRepo {
            repo_id: hello,
            secrets_allowed: true,
        }),
    )
    .await;
    let page = |cookie: String| api.page_status(format!("/runs/{run_id}"), cookie);
    let session = support::dashboard_session(&api.engine.url, &alice).await;
    assert_eq!(
        page(session.clone()).await,
        200,
        "the session reads the private run"
    );

    // Another user cannot revoke it, nor learn that it exists.
    let (status, body) = api.revoke(alice_token_id, Some(&bob)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(api.revoke(alice_token_id, None).await.0, 401);
    assert_eq!(api.get("/api/user", Some(&alice)).await.0, 200);

    // Its owner can; then neither the token nor its session works.
    let (status, revoked) = api.revoke(alice_token_id, Some(&alice)).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].as_i64().is_some());
    assert_eq!(api.get("/api/user", Some(&alice)).await.0, 401);
    assert_ne!(page(session).await, 200, "the session ended with its token");
    assert_eq!(api.revoke(alice_token_id, Some(ADMIN)).await.0, 409);
    // The admin revokes anyone's.
    let (status, _) = api.revoke(bob_token_id, Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert_eq!(api.get("/api/user", Some(&bob)).await.0, 401);
    assert_eq!(api.revoke("x", Some(ADMIN)).await.0, 400);
    assert_eq!(api.revoke("999", Some(ADMIN)).await.0, 404);
}

/// Attack: mallory stole alice's token and, before alice revokes it, mints herself a
/// token with it (and another with that one) to keep. Revoking the stolen token revokes
/// what it made, down the line, and their sessions; alice's other tokens keep working.
/// (Fails without the cascade: the minted token still answered 200.)
#[tokio::test]
async fn tokens_made_with_a_revoked_token_stop_with_it() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let (_, stolen_id, stolen) =
        support::user_with_token(store, "alice", &[(hello, "writer")]).await;
    let (_, _, kept) = support::user_with_token(store, "alice", &[]).await;
    let (_, child) = api.mint(&stolen, json!({"name": "mine now"})).await;
    let (_, grandchild) = api.mint(&child, json!({"name": "and this"})).await;
    let (_, sibling) = api.mint(&kept, json!({"name": "alice's own"})).await;
    let session = support::dashboard_session(&api.engine.url, &grandchild).await;
    assert_eq!(
        store
            .session(&session_hash(&session), plue_store::now_ms())
            .await
            .unwrap()
            .map(|(user, _)| user.name),
        Some("alice".to_string())
    );

    let (status, body) = api.revoke(stolen_id, Some(&kept)).await;
    assert_eq!(status, 200, "{body}");
    for (what, token) in [
        ("stolen", &stolen),
        ("child", &child),
        ("grandchild", &grandchild),
    ] {
        assert_eq!(api.get("/api/user", Some(token)).await.0, 401, "{what}");
    }
    assert!(store
        .session(&session_hash(&session), plue_store::now_ms())
        .await
        .unwrap()
        .is_none());
    for (what, token) in [("kept", &kept), ("sibling", &sibling)] {
        assert_eq!(api.get("/api/user", Some(token)).await.0, 200, "{what}");
    }
    let (_, listed) = api.get("/api/tokens", Some(&kept)).await;
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["revoked_at"].is_i64())
        .count();
    assert_eq!(revoked, 3, "{listed}");
}

/// Attack: a token alice narrowed to reading one repository (handed to a service) tries
/// to end alice's other tokens, and to learn her other repositories and tokens. It
/// revokes and lists only itself and what it made, and names no other repository. (Fails
/// without the rules: 200 for alice's full token; octo/secret among the user's roles.)
#[tokio::test]
async fn a_narrowed_token_revokes_only_itself_and_what_it_made() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let secret = support::create_named_repo(store, "octo/secret").await;
    let (_, full_id, full) =
        support::user_with_token(store, "alice", &[(hello, "maintainer"), (secret, "writer")])
            .await;
    let (narrow_id, narrow) = api
        .mint(
            &full,
            json!({"name": "ci", "max_role": "reader", "repos": ["octo/hello"]}),
        )
        .await;
    let (child_id, _) = api.mint(&narrow, json!({"name": "ci-child"})).await;
    let (sibling_id, _) = api.mint(&full, json!({"name": "laptop"})).await;
    for path in ["/api/user", "/api/users/alice"] {
        let (status, me) = api.get(path, Some(&narrow)).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(
            me["roles"],
            json!([{"repository": "octo/hello", "role": "reader"}]),
            "{path}"
        );
    }
    let (_, listed) = api.get("/api/tokens", Some(&narrow)).await;
    let mut ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [narrow_id, child_id], "{listed}");
    let (_, listed) = api.get("/api/tokens", Some(&full)).await;
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    for id in [full_id, sibling_id] {
        let (status, body) = api.revoke(id, Some(&narrow)).await;
        assert_eq!(status, 403, "{id}: {body}");
    }
    assert_eq!(api.get("/api/user", Some(&full)).await.0, 200);
    let (status, body) = api.revoke(child_id, Some(&narrow)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.revoke(narrow_id, Some(&narrow)).await;
    assert_eq!(status, 200, "{body}");
    // The full token revokes any of its user's.
    let (status, body) = api.revoke(sibling_id, Some(&full)).await;
    assert_eq!(status, 200, "{body}");
}

/// The stored hash of a dashboard session's id, from its `plue_session=...` cookie.
fn session_hash(cookie: &str) -> String {
    let id = cookie
        .split(';')
        .filter_map(|pair| pair.trim().strip_prefix("plue_session="))
        .next()
        .unwrap_or_else(|| panic!("no session in {cookie}"));
    plue_vault::tokens::hash_token(id)
}

#[tokio::test]
async fn a_disabled_users_tokens_stop_and_the_admin_cannot_be_disabled() {
    let api = api().await;
    let store = api.store();
    let (_, _, alice) = support::user_with_token(store, "alice", &[]).await;
    let (_, _, bob) = support::user_with_token(store, "bob", &[]).await;
    let (_, bob_minted) = api.mint(&bob, json!({"name": "second"})).await;
    let bob_session = support::dashboard_session(&api.engine.url, &bob).await;
    let runners_page = |cookie: String| api.page_status("/runners".into(), cookie);
    assert_eq!(runners_page(bob_session.clone()).await, 200, "signed in");

    assert_eq!(api.delete("/api/users/bob", Some(&alice)).await.0, 403);
    assert_eq!(api.delete("/api/users/bob", None).await.0, 401);
    let (status, body) = api.delete("/api/users/admin", Some(ADMIN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(api.delete("/api/users/Admin", Some(ADMIN)).await.0, 409);
    assert_eq!(api.delete("/api/users/nobody", Some(ADMIN)).await.0, 404);

    let (status, disabled) = api.delete("/api/users/bob", Some(ADMIN)).await;
    assert_eq!(status, 200, "{disabled}");
    assert!(disabled["disabled_at"].as_i64().is_some());
    for token in [&bob, &bob_minted] {
        assert_eq!(api.get("/api/user", Some(token)).await.0, 401);
    }
    assert_ne!(
        runners_page(bob_session).await,
        200,
        "the disabled user's session is over"
    );
    assert_eq!(api.delete("/api/users/bob", Some(ADMIN)).await.0, 409);
    let (status, _) = api
        .post("/api/users/bob/tokens", Some(ADMIN), json!({"name": "x"}))
        .await;
    assert_eq!(status, 409, "no token for a disabled user");
    // Its name stays taken: nobody becomes bob again.
    let (status, _) = api.new_user(Some(ADMIN), "BOB", "person").await;
    assert_eq!(status, 409);
    assert_eq!(api.get("/api/user", Some(&alice)).await.0, 200);
}

#[tokio::test]
async fn groups_and_forge_logins_are_the_admins_to_manage() {
    let api = api().await;
    let store = api.store();
    let (_, _, alice) = support::user_with_token(store, "alice", &[]).await;
    support::user_with_token(store, "bob", &[]).await;
    let admin = Some(ADMIN);

    // Groups.
    let (status, group) = api
        .post("/api/groups", admin, json!({"name": "release"}))
        .await;
    assert_eq!(
        (status, group["members"].clone()),
        (201, json!([])),
        "{group}"
    );
    for (name, expected) in [("Release", 409), ("admin", 409), ("a b", 400)] {
        let (status, body) = api.post("/api/groups", admin, json!({"name": name})).await;
        assert_eq!(status, expected, "{name:?}: {body}");
    }
    for (method, path) in [
        (Method::PUT, "/api/groups/release/members/alice"),
        (Method::DELETE, "/api/groups/release/members/alice"),
        (Method::DELETE, "/api/groups/release"),
        (Method::GET, "/api/groups/release"),
        (Method::GET, "/api/groups"),
        (Method::POST, "/api/groups"),
    ] {
        let body = (method == Method::POST).then(|| json!({"name": "mine"}));
        let (status, _) = api
            .call(method.clone(), path, Some(&alice), body.clone())
            .await;
        assert_eq!(status, 403, "{method} {path} as alice");
        let (status, _) = api.call(method.clone(), path, None, body).await;
        assert_eq!(status, 401, "{method} {path} anonymously");
    }
    let (status, group) = api
        .call(
            Method::PUT,
            "/api/groups/release/members/Alice",
            admin,
            None,
        )
        .await;
    assert_eq!((status, group["members"].clone()), (200, json!(["alice"])));
    assert_eq!(
        store
            .group_keys_of(store.user_by_name("alice").await.unwrap().unwrap().id)
            .await
            .unwrap(),
        ["release"]
    );
    assert_eq!(
        api.call(
            Method::PUT,
            "/api/groups/release/members/nobody",
            admin,
            None
        )
        .await
        .0,
        404
    );
    let (_, listed) = api.get("/api/groups", admin).await;
    assert_eq!(
        listed,
        json!([{"name": "release", "created_at": listed[0]["created_at"], "members": ["alice"]}])
    );
    assert_eq!(
        api.delete("/api/groups/release/members/bob", admin).await.0,
        404
    );
    assert_eq!(
        api.delete("/api/groups/release/members/alice", admin)
            .await
            .0,
        200
    );
    assert_eq!(api.delete("/api/groups/release", admin).await.0, 200);
    assert_eq!(api.delete("/api/groups/release", admin).await.0, 404);

    // Forge logins.
    let link = |user: &str, token: Option<&str>, body: Value| {
        let path = format!("/api/users/{user}/forge-logins");
        let token = token.map(str::to_string);
        let api = &api;
        async move { api.post(&path, token.as_deref(), body).await }
    };
    let (status, linked) = link(
        "alice",
        admin,
        json!({"forge": "github", "login": "Alice-GH"}),
    )
    .await;
    assert_eq!(status, 201, "{linked}");
    let (status, _) = link(
        "alice",
        Some(&alice),
        json!({"forge": "github", "login": "other"}),
    )
    .await;
    assert_eq!(status, 403, "a user does not link logins to itself");
    let (status, body) = link(
        "bob",
        admin,
        json!({"forge": "github", "login": "alice-gh"}),
    )
    .await;
    assert_eq!(status, 409, "one login, one user: {body}");
    let (status, _) = link("bob", admin, json!({"forge": "gitea", "login": "alice-gh"})).await;
    assert_eq!(
        status, 201,
        "another forge's login of that name is another account"
    );
    assert_eq!(
        link("bob", admin, json!({"forge": "gitlab", "login": "x"}))
            .await
            .0,
        422
    );
    assert_eq!(
        link("bob", admin, json!({"forge": "github", "login": "a b"}))
            .await
            .0,
        400
    );
    assert_eq!(
        link("nobody", admin, json!({"forge": "github", "login": "n"}))
            .await
            .0,
        404
    );
    let (_, me) = api.get("/api/user", Some(&alice)).await;
    assert_eq!(
        me["forge_logins"],
        json!([{"forge": "github", "login": "Alice-GH"}])
    );
    assert_eq!(
        store
            .user_of_forge_login("github", "ALICE-gh")
            .await
            .unwrap(),
        Some(store.user_by_name("alice").await.unwrap().unwrap().id)
    );
    assert_eq!(
        api.delete(
            "/api/users/alice/forge-logins/github/alice-gh",
            Some(&alice)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api.delete("/api/users/alice/forge-logins/gitlab/alice-gh", admin)
            .await
            .0,
        400
    );
    assert_eq!(
        api.delete("/api/users/alice/forge-logins/github/alice-gh", admin)
            .await
            .0,
        200
    );
    assert_eq!(
        api.delete("/api/users/alice/forge-logins/github/alice-gh", admin)
            .await
            .0,
        404
    );

    // Every change is in the audit trail, with who made it.
    let (status, events) = api.get("/api/audit?limit=100", admin).await;
    assert_eq!(status, 200);
    let mut seen = actions(&events);
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "group.create",
            "group.delete",
            "group.member.add",
            "group.member.remove",
            "user.link",
            "user.unlink",
        ]
    );
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "admin"));
}

#[tokio::test]
async fn the_audit_trail_is_the_admins_and_each_maintainers_own() {
    let api = api().await;
    let store = api.store();
    let hello = support::create_named_repo(store, "octo/hello").await;
    let other = support::create_named_repo(store, "octo/other").await;
    let (_, _, carol) =
        support::user_with_token(store, "carol", &[(hello, "maintainer"), (other, "reader")]).await;
    let (_, _, wendy) = support::user_with_token(store, "wendy", &[(hello, "writer")]).await;
    let admin = Some(ADMIN);
    let (status, _) = api.new_user(admin, "dave", "person").await;
    assert_eq!(status, 201);
    let (_, token) = api.mint(&carol, json!({"name": "carol's"})).await;
    let (status, _) = api
        .call(
            Method::PATCH,
            "/api/repos/octo/hello",
            Some(&carol),
            Some(json!({"public_read": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Method::PATCH,
            "/api/repos/octo/other",
            admin,
            Some(json!({"public_read": false})),
        )
        .await;
    assert_eq!(status, 200);

    // The admin reads everything, newest first, and pages back.
    let (status, all) = api.get("/api/audit", admin).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        actions(&all),
        [
            "repo.settings",
            "repo.settings",
            "token.create",
            "user.create"
        ]
    );
    assert_eq!(all[0]["repository"], "octo/other");
    assert_eq!(all[2]["actor"], "carol");
    assert!(!all.to_string().contains(&token), "never a token");
    let before = all[1]["id"].as_i64().unwrap();
    let (_, older) = api
        .get(&format!("/api/audit?before={before}&limit=1"), admin)
        .await;
    assert_eq!(actions(&older), ["token.create"]);

    // A maintainer reads its repositories' events only, never installation-wide ones.
    let (status, mine) = api.get("/api/audit", Some(&carol)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(actions(&mine), ["repo.settings"]);
    assert_eq!(mine[0]["repository"], "octo/hello");
    let (status, mine) = api.get("/api/audit?repo=octo/hello", Some(&carol)).await;
    assert_eq!((status, actions(&mine)), (200, vec!["repo.settings"]));
    assert_eq!(
        api.get("/api/audit?repo=octo/other", Some(&carol)).await.0,
        403
    );
    // Others: refused; a repository they may not read is missing.
    assert_eq!(api.get("/api/audit", Some(&wendy)).await.0, 403);
    assert_eq!(
        api.get("/api/audit?repo=octo/hello", Some(&wendy)).await.0,
        403
    );
    assert_eq!(
        api.get("/api/audit?repo=octo/other", Some(&wendy)).await.0,
        404
    );
    assert_eq!(
        api.get("/api/audit?repo=octo/nothing", Some(&wendy))
            .await
            .0,
        404
    );
    assert_eq!(api.get("/api/audit", None).await.0, 401);
    assert_eq!(api.get("/api/audit?repo=x", admin).await.0, 400);
    assert_eq!(api.get("/api/audit?colour=red", admin).await.0, 400);
    // A maintainer's token narrowed below maintainer reads none of it.
    let (_, reader) = api
        .mint(&carol, json!({"name": "r", "max_role": "writer"}))
        .await;
    assert_eq!(api.get("/api/audit", Some(&reader)).await.0, 403);
}

// ---------------------------------------------------------------------------------------
// Forge identities, end to end: `plue serve`, a git repository, a signed push delivery.

const WEBHOOK_SECRET: &str = "webhook-secret-of-the-people-tests";

const SHIP: &str = r#"
def workflow(ctx):
    return Plan(name="Ship", triggers=[Trigger.on_push(branch="main"),
                                       Trigger.on_pull_request(branches=["main"])],
                steps=[Step.approval("ship", exclude_triggerer=True)])
"#;

/// A push of `sha` to main of `repo` by GitHub user `pusher`, from the real payload.
fn push_delivery(repo: &str, sha: &str, pusher: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let text = std::fs::read_to_string(root.join("github/push-new-branch.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["ref"] = json!("refs/heads/main");
    body["after"] = json!(sha);
    body["repository"]["full_name"] = json!(repo);
    body["repository"]["default_branch"] = json!("main");
    body["commits"][0]["id"] = json!(sha);
    body["head_commit"]["id"] = json!(sha);
    body["sender"]["login"] = json!(pusher);
    body["pusher"]["name"] = json!(pusher);
    serde_json::to_vec(&body).unwrap()
}

/// A `synchronize` of `repo`'s pull request 7 (head `sha` on its own branch) that `sender`
/// pushed onto `author`'s pull request, from the real payload.
fn synchronize_delivery(repo: &str, sha: &str, author: &str, sender: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let text = std::fs::read_to_string(root.join("github/pull_request-opened.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["action"] = json!("synchronize");
    body["number"] = json!(7);
    body["repository"]["full_name"] = json!(repo);
    body["pull_request"]["number"] = json!(7);
    body["pull_request"]["user"]["login"] = json!(author);
    body["pull_request"]["head"]["sha"] = json!(sha);
    body["pull_request"]["head"]["ref"] = json!("feature");
    body["pull_request"]["head"]["repo"]["full_name"] = json!(repo);
    body["pull_request"]["base"]["ref"] = json!("main");
    body["pull_request"]["base"]["sha"] = json!(sha);
    body["pull_request"]["base"]["repo"]["full_name"] = json!(repo);
    body["sender"]["login"] = json!(sender);
    serde_json::to_vec(&body).unwrap()
}

/// The user linked to the pusher's login is the push's triggerer: with exclude_triggerer
/// it may not approve the run's gate, another writer may. (Fails without the actor read
/// from the payload: nothing then links the run to the user.) The same for a pull
/// request's `synchronize` the user pushed onto somebody else's pull request: its sender
/// started it too (fails with only the author recorded: alice approved her own push).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_linked_to_the_pusher_may_not_approve_the_pushs_gate() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("people-pusher");
    let origin = sandbox.path("origin");
    let sha = support::git_repo(&origin, &[(".plue/ship.plue.py", SHIP)]);
    let engine = sandbox.serve_one_runner("engine", "data", &[]).await;
    let url = engine.url.as_str();
    let http = support::client(); // the admin token
    let repo = json!({"name": "octo/ship", "clone_url": origin.to_str().unwrap(),
                      "forge": "github", "webhook_secret": WEBHOOK_SECRET});
    let (status, body) = support::admin_call(url, Method::POST, "/api/repos", &repo).await;
    assert_eq!(status, 201, "{body}");
    // Alice pushes as octocat on GitHub; bob is another writer.
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        support::create_person(url, user).await;
        support::put_member(url, "octo/ship", user, "writer").await;
        tokens.push(support::api_token_of(url, user).await);
    }
    support::link_forge_login(url, "alice", "github", "octocat").await;

    let delivery = push_delivery("octo/ship", &sha, "OctoCat");
    let run_id = deliver_github(url, "push", "people-push-1", delivery).await;
    let why = "the pusher's user approved its own push";
    only_another_approves(&http, url, run_id, &tokens, why).await;
    support::wait_succeeded(&http, url, run_id, Duration::from_secs(60)).await;

    // Alice (octocat) pushes onto a pull request someone else opened.
    let delivery = synchronize_delivery("octo/ship", &sha, "someone-else", "octocat");
    let pr_run = deliver_github(url, "pull_request", "people-sync-1", delivery).await;
    let why = "who pushed onto the pull request approved its own code";
    only_another_approves(&http, url, pr_run, &tokens, why).await;
}

/// Delivers `delivery`, signed with [`WEBHOOK_SECRET`], as the GitHub `event` with id
/// `delivery_id`; the run it started.
async fn deliver_github(url: &str, event: &str, delivery_id: &str, delivery: Vec<u8>) -> i64 {
    let delivery: Value = serde_json::from_slice(&delivery).expect("a JSON delivery");
    let (_, answer) =
        support::deliver_webhook(url, "github", event, delivery_id, &delivery, WEBHOOK_SECRET)
            .await;
    answer["runs"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("no run: {answer}"))
}

/// Once run `run_id`'s gate `ship` waits: approving it with `tokens[0]` (the token of who
/// started the run) is refused as such (`why` it must be), with `tokens[1]` it passes.
async fn only_another_approves(
    http: &reqwest::Client,
    url: &str,
    run_id: i64,
    tokens: &[String],
    why: &str,
) {
    wait_for_ship_gate(http, url, run_id).await;
    let (status, body) = approve_ship(url, run_id, &tokens[0]).await;
    assert_eq!(status, 403, "{why}: {body}");
    assert!(body.contains("started this run"), "{body}");
    let (status, body) = approve_ship(url, run_id, &tokens[1]).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until run `run_id`'s step `ship` waits for its approval.
async fn wait_for_ship_gate(http: &reqwest::Client, url: &str, run_id: i64) {
    support::wait_for(Duration::from_secs(60), "the gate to wait", || {
        let http = http.clone();
        async move {
            let run = support::run_view(&http, url, run_id).await?;
            (support::step(&run, "ship")["status"] == "waiting").then_some(())
        }
    })
    .await;
}

/// `token` approves run `run_id`'s step `ship`: (status, body).
async fn approve_ship(url: &str, run_id: i64, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/runs/{run_id}/steps/ship/approve"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `plue ARGS --server URL` with `token`: (success, stdout, stderr).
fn plue(
    sandbox: &support::Sandbox,
    url: &str,
    token: &str,
    args: &[&str],
) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--server", url]);
    let output = sandbox
        .plue(&all)
        .env("PLUE_TOKEN", token)
        .output()
        .expect("plue runs");
    (
        output.status.success(),
        support::stdout(&output),
        support::stderr(&output),
    )
}

/// The verbs over the people API, as an admin would use them, and their refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_users_tokens_groups_members_and_reads_the_audit_trail() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("people-cli");
    let origin = sandbox.path("origin");
    support::git_repo(&origin, &[("README.md", "hello\n")]);
    let engine = sandbox.serve_one_runner("engine", "data", &[]).await;
    let url = engine.url.as_str();
    let admin = support::ADMIN_TOKEN;
    let ok = |args: &[&str]| {
        let (success, out, err) = plue(&sandbox, url, admin, args);
        assert!(success, "plue {args:?}: {err}");
        (out, err)
    };

    let (out, _) = ok(&["user", "create", "alice"]);
    assert!(out.contains("created person alice"), "{out}");
    ok(&["user", "create", "release-bot", "--bot"]);
    let (success, _, err) = plue(&sandbox, url, admin, &["user", "create", "ALICE"]);
    assert!(
        !success && err.contains("exists already") && err.contains("409"),
        "{err}"
    );
    let (out, _) = ok(&["user", "list"]);
    assert!(
        out.contains("alice\tperson\t-\t") && out.contains("release-bot\tbot\t"),
        "{out}"
    );
    ok(&["user", "link", "alice", "github", "octocat"]);
    let (out, _) = ok(&["user", "show", "alice"]);
    assert!(out.contains("forge login\tgithub:octocat"), "{out}");

    ok(&[
        "repo",
        "add",
        "octo/hello",
        "--clone-url",
        origin.to_str().unwrap(),
        "--forge",
        "github",
        "--webhook-secret",
        "webhook-secret-1",
    ]);
    ok(&["member", "set", "octo/hello", "alice", "writer"]);
    let (out, _) = ok(&["member", "list", "octo/hello"]);
    assert!(out.contains("alice\twriter\t"), "{out}");
    let (out, _) = ok(&["repo", "set-public", "octo/hello", "true"]);
    assert!(out.contains("reads are public"), "{out}");

    // A narrowed token of alice, made by the admin; alice cannot widen it.
    let (token, err) = ok(&[
        "token",
        "create",
        "ci",
        "--user",
        "alice",
        "--max-role",
        "reader",
        "--repo",
        "octo/hello",
        "--expires-in-days",
        "7",
    ]);
    let token = token.trim().to_string();
    assert!(
        err.contains("of alice: reader on octo/hello, expires"),
        "{err}"
    );
    let (success, _, err) = plue(
        &sandbox,
        url,
        &token,
        &["token", "create", "mine", "--max-role", "writer"],
    );
    assert!(
        !success && err.contains("at most reader") && err.contains("403"),
        "{err}"
    );
    let (success, _, err) = plue(&sandbox, url, &token, &["user", "create", "admin2"]);
    assert!(!success && err.contains("403"), "{err}");
    let (success, out, _) = plue(&sandbox, url, &token, &["token", "list"]);
    assert!(
        success && out.contains("\talice\tci\treader on octo/hello\t"),
        "{out}"
    );
    let id = out
        .lines()
        .find(|l| l.contains("\tci\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_string();

    ok(&["group", "create", "release"]);
    ok(&["group", "add", "release", "alice"]);
    let (out, _) = ok(&["group", "list"]);
    assert!(out.contains("@release\talice"), "{out}");
    ok(&["group", "remove", "release", "alice"]);
    ok(&["group", "delete", "release"]);
    ok(&["member", "remove", "octo/hello", "alice"]);

    let (out, _) = ok(&["token", "revoke", &id]);
    assert!(
        out.contains(&format!("revoked token {id} (ci) of alice")),
        "{out}"
    );
    let (success, _, err) = plue(&sandbox, url, &token, &["token", "list"]);
    assert!(!success && err.contains("401"), "{err}");
    ok(&["user", "unlink", "alice", "github", "octocat"]);
    let (out, _) = ok(&["user", "disable", "alice"]);
    assert!(out.contains("disabled alice"), "{out}");

    let (out, _) = ok(&["audit", "--limit", "100"]);
    for action in [
        "user.create",
        "user.link",
        "user.unlink",
        "user.disable",
        "token.create",
        "token.revoke",
        "group.create",
        "group.member.add",
        "group.member.remove",
        "group.delete",
        "repo.settings",
    ] {
        assert!(
            out.contains(&format!("\tadmin\t{action}\t")),
            "{action}: {out}"
        );
    }
    let (out, _) = ok(&["audit", "--repo", "octo/hello"]);
    assert!(
        out.contains("\trepo.settings\tocto/hello\t") && !out.contains("user.create"),
        "{out}"
    );
}
