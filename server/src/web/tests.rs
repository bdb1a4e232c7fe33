//! The dashboard's pages through its router (`tower::ServiceExt::oneshot`) over a real
//! SQLite store: status, the Content-Security-Policy on every response, escaping of hostile
//! step ids and log lines, keyset pagination, the evaluation error of a file that did not
//! evaluate, and the sign-in and CSRF checks played by an attacker. Who sees what, per role,
//! is in `access_tests.rs` (which shares this [`Fixture`]).
//!
//! Why one file past ~600 lines: the dashboard's pages through one router fixture over one
//! store; each test is a page or an attack, and they share the fixture's request helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use evaluator::plan::{Action, Plan, Step};
use plue_core::executor::Executor;
use plue_pool::kubernetes::{ClassStatus, Failures};
use plue_pool::PoolStatus;
use plue_store::{NewRun, Store};
use plue_types::protocol::{LogLine, Stream as LineStream, WorkspaceSource};
use plue_types::status::RunState;
use tower::ServiceExt;

use super::{router, WebState, CONTENT_SECURITY_POLICY};
use crate::api::ApiState;
use crate::testing::TestApi;

pub(super) const ADMIN: &str = "admin-token-of-the-dashboard-tests";
const HOSTILE: &str = "<script>alert(1)</script>";

pub(super) struct Fixture {
    pub(super) app: Router,
    pub(super) executor: Arc<Executor>,
    /// The admin's session: the `Cookie` header value and its CSRF token.
    pub(super) admin: (String, String),
    _dir: tempfile::TempDir,
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: axum::http::HeaderMap,
    /// The body with `&#x2f;` read back as `/` (the template escapes every slash).
    pub(super) body: String,
    /// The body as sent.
    pub(super) raw: String,
}

impl Reply {
    /// The values of its `Set-Cookie` headers, in order.
    pub(super) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// It tells the browser to forget the cookie `name` (empty, `Max-Age=0`).
    pub(super) fn clears_cookie(&self, name: &str) -> bool {
        let emptied = format!("{name}=;");
        self.set_cookies()
            .iter()
            .any(|c| c.starts_with(&emptied) && c.contains("Max-Age=0"))
    }
}

impl Fixture {
    pub(super) async fn new() -> Fixture {
        Fixture::with_classes(None).await
    }

    /// A fixture whose API shows these Kubernetes runner classes.
    async fn with_classes(
        pool_classes: Option<tokio::sync::watch::Receiver<Vec<ClassStatus>>>,
    ) -> Fixture {
        let TestApi {
            executor,
            state,
            dir,
        } = TestApi::new(ADMIN).await;
        let api = ApiState {
            pool_classes,
            ..state
        };
        crate::access::prepare(executor.store(), false)
            .await
            .unwrap();
        let mut fixture = Fixture {
            app: router(WebState {
                sign_in_links: Vec::new(),
                extra: axum::Router::new(),
                api,
                secure_cookies: false,
            }),
            executor,
            admin: (String::new(), String::new()),
            _dir: dir,
        };
        fixture.admin = fixture.sign_in_with(ADMIN).await;
        fixture
    }

    pub(super) fn store(&self) -> &Store {
        self.executor.store()
    }

    pub(super) async fn start(&self, plan: &Plan) -> i64 {
        let json = serde_json::to_string(plan).unwrap();
        // One file per workflow name (a workflow row is its file's).
        let path = format!("/w/{}.plue.py", super::encode(&plan.name));
        self.executor
            .start_run(&NewRun {
                workflow_source: "local",
                workflow_path: &path,
                event: "manual",
                git_ref: "refs/heads/main",
                sha: "0123456789abcdef",
                context_json: "{}",
                plan,
                plan_json: &json,
                plan_hash: "h",
                workspace: &WorkspaceSource::Empty,
                rerun_of: None,
                repo: None,
            })
            .await
            .unwrap()
    }

    pub(super) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        let raw = String::from_utf8(bytes.to_vec()).unwrap();
        Reply {
            status,
            headers,
            body: raw.replace("&#x2f;", "/"),
            raw,
        }
    }

    /// `uri` as the admin.
    pub(super) async fn get(&self, uri: &str) -> Reply {
        self.get_with(uri, Some(&self.admin.0)).await
    }

    /// `uri` without a session.
    pub(super) async fn get_anonymous(&self, uri: &str) -> Reply {
        self.get_with(uri, None).await
    }

    pub(super) async fn get_with(&self, uri: &str, cookie: Option<&str>) -> Reply {
        let mut request = Request::get(uri);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    pub(super) async fn post_form(
        &self,
        uri: &str,
        form: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Reply {
        let mut request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "127.0.0.1:8600");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        self.send(request.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Signs in with the admin token; returns the `Cookie` header value and the CSRF token.
    async fn sign_in(&self) -> (String, String) {
        self.sign_in_with(ADMIN).await
    }

    /// Signs in with `token`; returns the `Cookie` header value and the CSRF token.
    pub(super) async fn sign_in_with(&self, token: &str) -> (String, String) {
        let reply = self
            .post_form("/login", &format!("token={token}&next=%2F"), None, None)
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let cookies = reply.set_cookies();
        assert!(
            cookies
                .iter()
                .all(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict")),
            "{cookies:?}"
        );
        let pairs: Vec<&str> = cookies
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .collect();
        let csrf = pairs
            .iter()
            .find_map(|p| p.strip_prefix("plue_csrf="))
            .unwrap()
            .to_string();
        (pairs.join("; "), csrf)
    }
}

pub(super) fn bash(id: &str, deps: &[&str]) -> Step {
    let mut step = Step::bash(id, "true");
    step.depends_on = deps.iter().map(|d| d.to_string()).collect();
    step
}

pub(super) fn plan(name: &str, steps: Vec<Step>) -> Plan {
    Plan::new(name, steps)
}

fn assert_csp(reply: &Reply) {
    assert_eq!(
        reply.headers.get(header::CONTENT_SECURITY_POLICY).unwrap(),
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(
        reply.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
}

/// Every `<script` of a page is one of ours, from /assets, with nothing inline.
fn assert_only_our_scripts(body: &str) {
    for (at, _) in body.match_indices("<script") {
        let tag = &body[at..at + body[at..].find('>').unwrap() + 1];
        assert!(tag.starts_with("<script src=\"/assets/"), "{tag}");
        assert!(body[at..].starts_with(&format!("{tag}</script>")), "{tag}");
    }
}

#[tokio::test]
async fn runs_page_lists_the_newest_first() {
    let fx = Fixture::new().await;
    let first = fx.start(&plan("alpha", vec![bash("a", &[])])).await;
    let second = fx.start(&plan("beta", vec![bash("b", &[])])).await;
    let reply = fx.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_csp(&reply);
    assert_only_our_scripts(&reply.body);
    let at = |id: i64| reply.body.find(&format!("data-run=\"{id}\"")).unwrap();
    assert!(at(second) < at(first), "newest first");
    assert!(reply.body.contains("data-live=\"/runs/rows\""));
    let rows = fx.get("/runs/rows?workflow=beta").await;
    assert_eq!(rows.status, StatusCode::OK);
    assert!(rows.body.contains(&format!("data-run=\"{second}\"")));
    assert!(!rows.body.contains(&format!("data-run=\"{first}\"")));
}

#[tokio::test]
async fn runs_are_paged_by_keyset_and_filtered() {
    let fx = Fixture::new().await;
    let mut ids = Vec::new();
    for i in 0..55 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(fx.start(&plan(name, vec![bash("a", &[])])).await);
    }
    let page = fx.get("/").await;
    assert_eq!(page.body.matches("data-run=").count(), 50);
    let cursor = ids[5];
    let older = format!("href=\"/?before={cursor}\"");
    assert!(page.body.contains(&older), "a link to the older page");
    let second = fx.get(&format!("/?before={cursor}")).await;
    assert_eq!(second.body.matches("data-run=").count(), 5);
    assert!(
        !second.body.contains("data-live="),
        "older pages do not poll"
    );
    let odd = fx.get("/?workflow=odd&status=queued").await;
    assert_eq!(odd.body.matches("data-run=").count(), 27);
    let none = fx.get("/?status=failed").await;
    assert!(none.body.contains("No runs match these filters."));
    let bad = fx.get("/?before=abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_csp(&bad);
}

#[tokio::test]
async fn run_page_draws_the_plan_as_a_dag() {
    let fx = Fixture::new().await;
    let id = fx
        .start(&plan(
            "diamond",
            vec![
                bash("a", &[]),
                bash("b", &["a"]),
                bash("c", &["a"]),
                bash("d", &["b", "c"]),
            ],
        ))
        .await;
    let reply = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_csp(&reply);
    assert_only_our_scripts(&reply.body);
    assert_eq!(reply.body.matches("class=\"node ").count(), 4);
    assert_eq!(reply.body.matches("<path class=\"edge ").count(), 4);
    assert!(reply.body.contains("class=\"node queued\" data-step=\"a\""));
    assert!(reply
        .body
        .contains("class=\"node pending\" data-step=\"d\""));
    assert!(reply
        .body
        .contains(&format!("data-live=\"/runs/{id}/live\"")));
    // The admin may cancel the local run.
    assert!(reply.body.contains("id=\"cancel\""));
    let live = fx.get(&format!("/runs/{id}/live")).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.body.starts_with("<section id=\"run\""));
    assert_eq!(fx.get("/runs/999").await.status, StatusCode::NOT_FOUND);
    assert_eq!(fx.get("/runs/x").await.status, StatusCode::NOT_FOUND);
    // Not signed in: a local run (the admin's) is behind the sign-in page, as a missing one.
    for uri in [format!("/runs/{id}"), "/runs/999".to_string()] {
        let anonymous = fx.get_anonymous(&uri).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(anonymous.body.contains("action=\"/login\""), "{uri}");
        assert!(!anonymous.body.contains("diamond"), "{uri}");
    }
}

#[tokio::test]
async fn hostile_step_ids_and_log_lines_are_text() {
    let fx = Fixture::new().await;
    let id = fx.start(&plan(HOSTILE, vec![bash(HOSTILE, &[])])).await;
    let step = fx.store().step_run(id, HOSTILE).await.unwrap().unwrap();
    let line = LogLine {
        seq: 1,
        stream: LineStream::Stdout,
        text: format!("{HOSTILE} \"quoted\" 'single' & amp"),
        ts_ms: 1,
    };
    fx.store().append_logs(step.id, 1, &[line]).await.unwrap();
    let encoded = super::encode(HOSTILE);
    for uri in [
        "/".to_string(),
        format!("/runs/{id}"),
        format!("/runs/{id}/steps/{encoded}"),
    ] {
        let reply = fx.get(&uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        assert_csp(&reply);
        assert!(!reply.raw.contains("<script>alert"), "{uri} shows raw HTML");
        assert!(reply.body.contains("&lt;script&gt;alert(1)"), "{uri}");
        assert_only_our_scripts(&reply.body);
    }
    let log = fx.get(&format!("/runs/{id}/steps/{encoded}")).await;
    assert!(
        log.body.contains("data-done=\"false\""),
        "a queued step's log follows"
    );
    let raw = fx.get(&format!("/runs/{id}/steps/{encoded}/raw")).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert!(raw.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(raw.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("filename=\"run-"));
    assert_eq!(raw.body, format!("{HOSTILE} \"quoted\" 'single' & amp\n"));
    let stream = fx.get(&format!("/runs/{id}/steps/{encoded}/stream")).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.body);
    let line: serde_json::Value = serde_json::from_str(stream.body.trim()).unwrap();
    assert_eq!(line["seq"], 1);
    assert!(line["text"].as_str().unwrap().starts_with(HOSTILE));
    let missing = fx.get(&format!("/runs/{id}/steps/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_file_that_did_not_evaluate_shows_its_error() {
    let fx = Fixture::new().await;
    let empty = plan("broken", vec![]);
    let json = serde_json::to_string(&empty).unwrap();
    let id = fx
        .store()
        .create_failed_run(
            &NewRun {
                workflow_path: "/w/broken.plue.py",
                event: "push",
                sha: "abc",
                plan_hash: "",
                ..plue_store::testing::local_run(&empty, &json)
            },
            "broken.plue.py:3:5: name 'x' is not defined <b>",
        )
        .await
        .unwrap();
    let reply = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("id=\"eval-error\""));
    assert!(reply
        .body
        .contains("broken.plue.py:3:5: name &#x27;x&#x27; is not defined &lt;b&gt;"));
    assert!(!reply.body.contains("id=\"dag\""));
}

#[tokio::test]
async fn local_runs_need_the_admin_and_an_old_token_cookie_is_no_session() {
    let fx = Fixture::new().await;
    let id = fx.start(&plan("secret", vec![bash("a", &[])])).await;
    for uri in [
        "/".to_string(),
        format!("/runs/{id}"),
        format!("/runs/{id}/steps/a"),
        format!("/runs/{id}/steps/a/stream"),
        format!("/runs/{id}/steps/a/raw"),
        "/runners".to_string(),
    ] {
        let reply = fx.get_anonymous(&uri).await;
        assert_csp(&reply);
        assert!(!reply.body.contains("secret"), "{uri} leaks the run");
        if uri != "/" {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(reply.body.contains("action=\"/login\""), "{uri}");
        }
        // The cookie of old, holding the admin token itself, is read by nobody: anonymous,
        // and the browser is told to forget it.
        let old = fx
            .get_with(&uri, Some(&format!("plue_token={ADMIN}; plue_csrf=x")))
            .await;
        assert_eq!(old.status, reply.status, "{uri}");
        assert!(!old.body.contains("secret"), "{uri} leaks the run");
        assert!(
            old.clears_cookie("plue_token"),
            "{uri}: {:?}",
            old.set_cookies()
        );
    }
    let wrong = fx
        .post_form("/login", "token=not-the-token&next=%2F", None, None)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let (cookie, _) = fx.sign_in().await;
    let reply = fx.get_with("/", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("secret"));
    let stream = fx
        .get_with(&format!("/runs/{id}/steps/a/stream"), Some(&cookie))
        .await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.body);
}

#[tokio::test]
async fn sign_in_never_sends_the_user_off_site() {
    let fx = Fixture::new().await;
    let reply = fx
        .post_form(
            "/login",
            &format!("token={ADMIN}&next=%2F%2Fevil.example%2F"),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::LOCATION], "/");
}

#[tokio::test]
async fn cancel_without_the_session_csrf_token_is_refused() {
    let fx = Fixture::new().await;
    let id = fx.start(&plan("long", vec![bash("a", &[])])).await;
    let (cookie, csrf) = fx.sign_in().await;
    let page = fx.get_with(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(page.body.contains(&format!("value=\"{csrf}\"")));
    assert!(page.body.contains("id=\"cancel\""));
    let cancel = format!("/runs/{id}/cancel");
    // A forged form: the cookie rides along, the CSRF token is unknown to the attacker.
    for (form, origin) in [
        ("csrf=guess".to_string(), None),
        (String::new(), None),
        (format!("csrf={csrf}"), Some("http://evil.example")),
    ] {
        let reply = fx.post_form(&cancel, &form, Some(&cookie), origin).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{form} {origin:?}");
        let run = fx.store().run(id).await.unwrap().unwrap();
        assert!(!run.cancel_requested, "the forged form cancelled the run");
    }
    // No session at all: no CSRF token to match.
    let anonymous = fx.post_form(&cancel, "csrf=x", None, None).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let reply = fx
        .post_form(
            &cancel,
            &format!("csrf={csrf}"),
            Some(&cookie),
            Some("http://127.0.0.1:8600"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.headers[header::LOCATION], format!("/runs/{id}"));
    let run = fx.store().run(id).await.unwrap().unwrap();
    assert!(run.status == RunState::Cancelled || run.cancel_requested);
}

#[tokio::test]
async fn rerun_goes_to_the_new_run() {
    let fx = Fixture::new().await;
    let id = fx.start(&plan("again", vec![bash("a", &[])])).await;
    fx.executor.cancel(id).await.unwrap();
    let (cookie, csrf) = fx.sign_in().await;
    let page = fx.get_with(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(page.body.contains("id=\"rerun\""), "{}", page.body);
    let reply = fx
        .post_form(
            &format!("/runs/{id}/rerun"),
            &format!("csrf={csrf}"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let location = reply.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(location, format!("/runs/{id}"));
    assert_eq!(fx.get(&location).await.status, StatusCode::OK);
}

#[tokio::test]
async fn assets_are_served_and_nothing_else() {
    let fx = Fixture::new().await;
    for (file, kind) in [
        ("app.css", "text/css"),
        ("live.js", "text/javascript"),
        ("log.js", "text/javascript"),
    ] {
        let reply = fx.get(&format!("/assets/{file}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{file}");
        assert!(reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert_csp(&reply);
    }
    for hostile in ["/assets/..%2FCargo.toml", "/assets/mod.rs", "/assets/"] {
        assert_eq!(
            fx.get(hostile).await.status,
            StatusCode::NOT_FOUND,
            "{hostile}"
        );
    }
    // Sign-in is reachable while reads are private.
    assert_eq!(fx.get("/login").await.status, StatusCode::OK);
}

#[tokio::test]
async fn runners_page_lists_registered_runners() {
    let fx = Fixture::new().await;
    let reply = fx.get("/runners").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("No runner is registered."));
    assert_csp(&reply);
}

#[tokio::test]
async fn runners_page_shows_each_class_counts_and_latest_failure() {
    let classes = vec![
        ClassStatus {
            class: "gpu".into(),
            labels: BTreeMap::from([("gpu".to_string(), "a100".to_string())]),
            pool: Some(PoolStatus {
                warm: 2,
                busy: 3,
                starting: 1,
                lost: 0,
                min_warm: 2,
                max_runners: 8,
                queued: 4,
                ..PoolStatus::default()
            }),
            failures: Failures {
                total: 5,
                last: Some(format!("pod plue-gpu-7: ImagePullBackOff {HOSTILE}")),
                backing_off: true,
            },
        },
        ClassStatus {
            class: "small".into(),
            labels: BTreeMap::new(),
            pool: None,
            failures: Failures::default(),
        },
    ];
    let (_tx, rx) = tokio::sync::watch::channel(classes);
    let fx = Fixture::with_classes(Some(rx)).await;
    let reply = fx.get("/runners").await;
    assert_eq!(reply.status, StatusCode::OK);
    let row = |class: &str| -> String {
        let start = reply
            .body
            .find(&format!("<tr data-class=\"{class}\">"))
            .unwrap_or_else(|| panic!("no row for class {class}: {}", reply.body));
        let end = start + reply.body[start..].find("</tr>").unwrap();
        reply.body[start..end].to_string()
    };
    let gpu = row("gpu");
    for cell in [
        "<td class=\"warm\">2</td>",
        "<td class=\"busy\">3</td>",
        "<td class=\"starting\">1</td>",
        "<td class=\"failed\">5 <span class=\"badge failed\"><span aria-hidden=\"true\">\u{2717}</span> backing off</span></td>",
        "<code>gpu=a100</code>",
        "pod plue-gpu-7: ImagePullBackOff &lt;script&gt;",
    ] {
        assert!(gpu.contains(cell), "{cell} missing from {gpu}");
    }
    assert!(row("small").contains("another engine leads"));
    // No local pool: its counts are not shown as zeros.
    assert!(!reply.body.contains("id=\"pool\""));
    assert!(!reply.raw.contains(HOSTILE));
    assert_csp(&reply);
}

/// A repository `acme/app` (default branch `main`) with a run of `ci.plue.py` whose plan
/// has a manual trigger, and a run of `broken.plue.py` on `main` that did not evaluate.
pub(super) async fn repository(fx: &Fixture) -> (i64, i64) {
    use evaluator::plan::{ManualInput, Trigger};
    use plue_store::RunRepo;
    let repo_id = plue_store::testing::create_repo(fx.store(), "acme/app").await;
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "target".to_string(),
        ManualInput {
            default: None,
            required: true,
            description: Some(format!("where to {HOSTILE}")),
            options: vec!["staging".into(), "production".into()],
            kind: Default::default(),
        },
    );
    inputs.insert(
        "note".to_string(),
        ManualInput {
            default: Some("hello".into()),
            required: false,
            description: None,
            options: vec![],
            kind: Default::default(),
        },
    );
    let mut ci = plan("ci", vec![bash("build", &[])]);
    ci.triggers = vec![Trigger::Manual { inputs }];
    let json = serde_json::to_string(&ci).unwrap();
    let run_repo = Some(RunRepo {
        repo_id,
        secrets_allowed: true,
    });
    let mut run = NewRun {
        workflow_source: "acme/app",
        workflow_path: ".plue/ci.plue.py",
        event: "push",
        sha: "1111111111",
        repo: run_repo,
        ..plue_store::testing::local_run(&ci, &json)
    };
    let ci_run = fx.executor.start_run(&run).await.unwrap();
    run.git_ref = "refs/heads/feature";
    fx.executor.start_run(&run).await.unwrap();
    let empty = plan("broken", vec![]);
    let empty_json = serde_json::to_string(&empty).unwrap();
    run.workflow_path = ".plue/broken.plue.py";
    run.git_ref = "refs/heads/main";
    run.plan = &empty;
    run.plan_json = &empty_json;
    run.plan_hash = "";
    let broken = fx
        .store()
        .create_failed_run(&run, &format!("broken.plue.py:2:1: {HOSTILE}"))
        .await
        .unwrap();
    (ci_run, broken)
}

#[tokio::test]
async fn repository_page_shows_workflows_errors_and_the_dispatch_form() {
    let fx = Fixture::new().await;
    let (ci_run, broken) = repository(&fx).await;
    let acme = fx.store().repo_by_name("acme/app").await.unwrap().unwrap();
    fx.store().set_public_read(acme.id, true).await.unwrap();
    let list = fx.get_anonymous("/repos").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("href=\"/repos/acme/app\""));
    let anonymous = fx.get_anonymous("/repos/acme/app").await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.body);
    assert_csp(&anonymous);
    assert!(anonymous.body.contains("to run this workflow by hand"));
    assert!(!anonymous.raw.contains("<script>alert"));
    assert!(anonymous.body.contains(&format!(
        "run #{broken}</a>)<pre>broken.plue.py:2:1: &lt;script&gt;"
    )));
    assert!(anonymous.body.contains(&format!("href=\"/runs/{ci_run}\"")));
    assert_eq!(anonymous.body.matches("data-workflow=").count(), 2);
    let (cookie, csrf) = fx.sign_in().await;
    let page = fx.get_with("/repos/acme/app", Some(&cookie)).await;
    assert!(page.body.contains("class=\"dispatch\""), "{}", page.body);
    assert!(page
        .body
        .contains("<select name=\"input.target\" required>"));
    assert!(page.body.contains("<option>production</option>"));
    assert!(page.body.contains("name=\"input.note\" value=\"hello\">"));
    assert!(page.body.contains("title=\"required\""));
    assert_eq!(
        fx.get("/repos/acme/nope").await.status,
        StatusCode::NOT_FOUND
    );
    // The form reaches the API's dispatch (which, without an evaluator, says so).
    let reply = fx
        .post_form(
            "/repos/acme/app/dispatch",
            &format!(
                "csrf={csrf}&workflow=.plue%2Fci.plue.py&ref=main&input.target=staging&input.note="
            ),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{}", reply.body);
    assert!(reply
        .body
        .contains("Not started:</strong> this engine has no evaluator."));
    // The inputs as they were posted stay on the form.
    assert!(reply.body.contains("<option selected>staging</option>"));
    let forged = fx
        .post_form(
            "/repos/acme/app/dispatch",
            "csrf=guess&workflow=.plue%2Fci.plue.py",
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_run_of_500_steps_renders_quickly() {
    let fx = Fixture::new().await;
    let ids: Vec<String> = (0..500).map(|i| format!("step-{i}")).collect();
    let steps = (0..500)
        .map(|i| match i {
            0 => bash(&ids[0], &[]),
            _ => bash(&ids[i], &[&ids[(i - 1) / 3]]),
        })
        .collect();
    let id = fx.start(&plan("wide", steps)).await;
    let started = std::time::Instant::now();
    let reply = fx.get(&format!("/runs/{id}")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    // Layers wider than the DAG's bound are drawn as groups listing their steps: a
    // bounded drawing, every step in it once (its own node or a group's list).
    let nodes = reply.body.matches("class=\"node ").count();
    assert!(nodes <= 120, "{nodes} nodes");
    for step in &ids {
        let drawn = reply
            .body
            .matches(&format!("data-step=\"{step}\" data-status="))
            .count()
            + reply
                .body
                .matches(&format!("data-member=\"{step}\""))
                .count();
        assert_eq!(drawn, 1, "{step}");
    }
    eprintln!("a 500-step run page rendered in {took:?}");
    // A debug build takes ~20 ms here; the bound catches a rendering that grows out of
    // hand, with room for a loaded machine.
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn live_stream_hints_changes_of_its_run_only() {
    use futures::StreamExt;
    use plue_store::events::Event;
    let fx = Fixture::new().await;
    let seven = fx.start(&plan("seven", vec![bash("a", &[])])).await;
    let eight = fx.start(&plan("eight", vec![bash("a", &[])])).await;
    let response = fx
        .app
        .clone()
        .oneshot(
            Request::get(format!("/live?run={seven}"))
                .header(header::COOKIE, &fx.admin.0)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let events = fx.executor.events();
    events.send(Event::Step { run_id: eight });
    events.send(Event::Logs {
        run_id: seven,
        step_run_id: 1,
    });
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), body.next()).await;
    assert!(quiet.is_err(), "another run's change is not this page's");
    events.send(Event::Step { run_id: seven });
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("a hint")
        .unwrap()
        .unwrap();
    let frame = String::from_utf8(frame.to_vec()).unwrap();
    assert!(frame.contains("event: changed"), "{frame}");
    assert!(frame.contains("data: {}"), "hints carry no data: {frame}");
}

#[tokio::test]
async fn a_runs_live_stream_cannot_be_read_without_reading_the_run() {
    let fx = Fixture::new().await;
    let id = fx.start(&plan("local", vec![bash("a", &[])])).await;
    for uri in [format!("/live?run={id}"), "/live?run=999".to_string()] {
        let reply = fx.get_anonymous(&uri).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(!reply.raw.contains("event:"), "{uri}");
    }
    assert_eq!(fx.get("/live?run=999").await.status, StatusCode::NOT_FOUND);
    assert_eq!(fx.get("/live?run=x").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn run_page_shows_review_loops_and_iterations() {
    let fx = Fixture::new().await;
    let mut review = bash("review", &["build"]);
    review.loop_to = Some("build".into());
    review.max_loops = Some(2);
    let id = fx
        .start(&plan(
            "looping",
            vec![bash("build", &[]), review, bash("deploy", &["review"])],
        ))
        .await;
    let reply = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("<dt>Review loop</dt><dd>iteration 1 of review"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("(back to build, at most 2 times)"));
    assert_eq!(
        reply
            .body
            .matches("class=\"muted iteration\">iteration 1<")
            .count(),
        2,
        "build and review repeat, deploy does not"
    );
    // A run without loops shows none.
    let plain = fx.start(&plan("plain", vec![bash("a", &[])])).await;
    let page = fx.get(&format!("/runs/{plain}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains("Review loop"));
}

#[tokio::test]
async fn a_waiting_approval_is_decided_from_the_run_page() {
    use evaluator::plan::ApprovalAction;
    let fx = Fixture::new().await;
    let gate = |id: &str| {
        Step::new(
            id,
            Action::Approval(ApprovalAction {
                message: Some("Ship it?".into()),
                approvers: Vec::new(),
                exclude_triggerer: false,
            }),
        )
    };
    let id = fx
        .start(&plan("gated", vec![gate("ship"), gate("<b>x</b>")]))
        .await;
    let anonymous = fx.get_anonymous(&format!("/runs/{id}")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(!anonymous.body.contains("data-approve"));
    let (cookie, csrf) = fx.sign_in().await;
    let page = fx.get_with(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(page.body.contains("data-approve=\"ship\""), "{}", page.body);
    // A hostile step id is text in the page and one encoded segment in the form's action.
    assert!(
        page.body.contains("/steps/%3Cb%3Ex%3C%2Fb%3E/reject"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>x</b>"));
    // A forged form (no session CSRF token) decides nothing.
    let forged = fx
        .post_form(
            &format!("/runs/{id}/steps/ship/approve"),
            "csrf=guess",
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(fx.store().approvals_of_run(id).await.unwrap().is_empty());
    for (step, verb, decision) in [
        ("ship", "approve", "approved"),
        ("<b>x</b>", "reject", "rejected"),
    ] {
        let reply = fx
            .post_form(
                &format!("/runs/{id}/steps/{}/{verb}", super::encode(step)),
                &format!("csrf={csrf}"),
                Some(&cookie),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.headers[header::LOCATION], format!("/runs/{id}"));
        let decided = fx.store().approvals_of_run(id).await.unwrap();
        assert!(
            decided
                .iter()
                .any(|a| a.step_id == step && a.decision == decision),
            "{decided:?}"
        );
    }
    // Decided: no buttons any more.
    let page = fx.get_with(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(!page.body.contains("data-approve"), "{}", page.body);
}

#[tokio::test]
async fn each_step_says_its_kind_on_the_run_page_and_its_own_page() {
    use evaluator::plan::{ApprovalAction, LlmAction};
    let fx = Fixture::new().await;
    let python = Step::new(
        "check",
        Action::Python {
            script: "print(1)".into(),
            fresh_interpreter: false,
        },
    );
    let mut review = Step::new(
        "review",
        Action::Llm(LlmAction {
            prompt: Some("Review it.".into()),
            ..LlmAction::default()
        }),
    );
    review.depends_on = vec!["check".into()];
    let mut ship = Step::new(
        "ship",
        Action::Approval(ApprovalAction {
            message: Some("Ship it?".into()),
            approvers: Vec::new(),
            exclude_triggerer: false,
        }),
    );
    ship.depends_on = vec!["review".into()];
    let id = fx
        .start(&plan(
            "kinds",
            vec![bash("build", &[]), python, review, ship],
        ))
        .await;
    let page = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<th>Kind</th>"), "{}", page.body);
    for (step, kind) in [
        ("build", "bash"),
        ("check", "python"),
        ("review", "llm"),
        ("ship", "approval"),
    ] {
        let at = page
            .body
            .find(&format!("<tr data-step=\"{step}\">"))
            .unwrap_or_else(|| panic!("no row of {step}: {}", page.body));
        let row = &page.body[at..at + page.body[at..].find("</tr>").unwrap()];
        assert!(
            row.contains(&format!(
                "<td class=\"kind\"><span class=\"step-kind\" data-kind=\"{kind}\">{kind}</span></td>"
            )),
            "{step}: {row}"
        );
        let own = fx.get(&format!("/runs/{id}/steps/{step}")).await;
        assert_eq!(own.status, StatusCode::OK, "{}", own.body);
        let head = &own.body[own.body.find("<h1>").unwrap()..own.body.find("</h1>").unwrap()];
        assert!(
            head.contains(&format!("id=\"step-kind\" data-kind=\"{kind}\"")),
            "{step}: {head}"
        );
    }
}

// Issue 54: an approval's comment was shown on the step's page only; the run page's
// approval banner dropped the panel once decided, so the comment was nowhere on it.
#[tokio::test]
async fn a_decided_approval_shows_its_comment_on_the_run_page() {
    use evaluator::plan::ApprovalAction;
    let fx = Fixture::new().await;
    let gate = Step::new(
        "ship",
        Action::Approval(ApprovalAction {
            message: Some("Ship it?".into()),
            approvers: Vec::new(),
            exclude_triggerer: false,
        }),
    );
    let after = bash("deploy", &["ship"]);
    let id = fx.start(&plan("gated", vec![gate, after])).await;
    let (cookie, csrf) = fx.sign_in().await;
    let reply = fx
        .post_form(
            &format!("/runs/{id}/steps/ship/approve"),
            &format!("csrf={csrf}&comment=checked+%3Cb%3Estaging%3C%2Fb%3E"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = fx.get_with(&format!("/runs/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let at = page
        .body
        .find("id=\"approval-ship\"")
        .unwrap_or_else(|| panic!("no approval banner: {}", page.body));
    let banner = &page.body[at..at + page.body[at..].find("</section>").unwrap()];
    assert!(banner.contains("data-decision=\"approved\""), "{banner}");
    // The comment, escaped by the template.
    assert!(
        banner.contains("<q>checked &lt;b&gt;staging&lt;/b&gt;</q>"),
        "{banner}"
    );
    assert!(!page.body.contains("<b>staging"), "{}", page.body);
    assert!(!banner.contains("data-approve"), "{banner}");
}

// Issue 54: a re-run's timeline drew the steps it carried over with their durations in
// the earlier run and an empty lane, as if they had run (and run instantly) here.
#[tokio::test]
async fn a_reruns_timeline_marks_carried_steps() {
    use plue_store::testing::Sql;
    let fx = Fixture::new().await;
    let workflow = plan("again", vec![bash("a", &[]), bash("b", &["a"])]);
    let first = fx.start(&workflow).await;
    Sql::new(
        "UPDATE step_runs SET status = CASE WHEN step_id = 'a' THEN 'succeeded' \
         ELSE 'failed' END, exit_code = 0, started_at = 1000, finished_at = 43000 \
         WHERE run_id = $1",
    )
    .bind(first)
    .execute(fx.store())
    .await;
    let json = serde_json::to_string(&workflow).unwrap();
    let second = fx
        .store()
        .create_rerun_by(
            &NewRun {
                workflow_source: "local",
                workflow_path: "/w/again.plue.py",
                event: "manual",
                git_ref: "refs/heads/main",
                sha: "0123456789abcdef",
                context_json: "{}",
                plan: &workflow,
                plan_json: &json,
                plan_hash: "h",
                workspace: &WorkspaceSource::Empty,
                rerun_of: Some(first),
                repo: None,
            },
            4,
            None,
            &["a".into()],
        )
        .await
        .unwrap()
        .id;
    let page = fx.get(&format!("/runs/{second}/timeline")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let at = page
        .body
        .find("<tr data-step=\"a\"")
        .unwrap_or_else(|| panic!("no lane of a: {}", page.body));
    let row = &page.body[at..at + page.body[at..].find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("data-carried-from=\"{first}\"")),
        "{row}"
    );
    assert!(row.contains("carried over from"), "{row}");
    assert!(!row.contains("42.0 s"), "the earlier run's duration: {row}");
    // b is this run's own step: no mark.
    let at = page.body.find("<tr data-step=\"b\"").unwrap();
    let row = &page.body[at..at + page.body[at..].find("</tr>").unwrap()];
    assert!(!row.contains("carried"), "{row}");
}

// Issue 54: a group's counts are glyphs for the eye (each status its own); a reader hears
// the group's name, its `<title>`, which says them in words, not the glyphs again.
#[tokio::test]
async fn a_groups_counts_are_said_in_words() {
    let fx = Fixture::new().await;
    let mut steps = vec![bash("root", &[])];
    for i in 0..13 {
        steps.push(bash(&format!("shard-{i}"), &["root"]));
    }
    let id = fx.start(&plan("wide", steps)).await;
    let page = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let at = page
        .body
        .find("class=\"node group")
        .unwrap_or_else(|| panic!("no group: {}", page.body));
    let node = &page.body[at..at + page.body[at..].find("</g>").unwrap()];
    assert!(
        node.contains("<title data-f>shard: 13 steps — 13 pending (click to list them)</title>"),
        "{node}"
    );
    assert!(
        node.contains("<text class=\"state\" x=\"10\" y=\"35\" data-f aria-hidden=\"true\">13 \u{25CB} pending</text>"),
        "{node}"
    );
}

// The attack: a statement signed for a change the forge refused was served, and a reader
// took it for the agent's change. The run page says, per proposal, whether its statement
// landed: applied with its link, pending, or failed with the reason (escaped) and no link.
#[tokio::test]
async fn the_run_page_says_whether_each_proposals_statement_landed() {
    use plue_store::testing::Sql;
    let fx = Fixture::new().await;
    let id = fx.start(&plan("agent", vec![bash("fix", &[])])).await;
    let step_run = fx.store().step_run(id, "fix").await.unwrap().unwrap().id;
    let mut proposals = Vec::new();
    for position in 0..3i64 {
        let proposal: i64 = Sql::new(
            "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, kind, payload, \
             state, created_at) VALUES ($1, $2, 1, $3, 'comment', '{\"body\":\"hi\"}', \
             'applying', 0) RETURNING id",
        )
        .bind(id)
        .bind(step_run)
        .bind(position)
        .one_int(fx.store())
        .await;
        fx.store()
            .record_statement(proposal, id, "sha256:ab", "{}")
            .await
            .unwrap();
        proposals.push(proposal);
    }
    let refused = format!("the forge refused the push: {HOSTILE}");
    assert!(fx
        .store()
        .mark_applied(proposals[0], "https://forge.example/c/1")
        .await
        .unwrap());
    assert!(fx
        .store()
        .mark_failed(proposals[1], &refused, None)
        .await
        .unwrap());
    let page = fx.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let article = |proposal: i64| {
        let at = page
            .body
            .find(&format!("id=\"proposal-{proposal}\""))
            .unwrap_or_else(|| panic!("no proposal {proposal}: {}", page.body));
        let rest = &page.body[at..];
        rest[..rest.find("</article>").unwrap()].to_owned()
    };
    let applied = article(proposals[0]);
    assert!(
        applied.contains("data-provenance=\"applied\"")
            && applied.contains(&format!(
                "href=\"/api/runs/{id}/proposals/{}/provenance\"",
                proposals[0]
            )),
        "{applied}"
    );
    let failed = article(proposals[1]);
    assert!(
        failed.contains("data-provenance=\"failed\"")
            && failed.contains("its signed statement is not served")
            && failed.contains("the forge refused the push: &lt;script&gt;"),
        "{failed}"
    );
    assert!(!failed.contains("/provenance\""), "{failed}");
    let pending = article(proposals[2]);
    assert!(
        pending.contains("data-provenance=\"pending\"")
            && pending.contains("served once the forge accepts the write")
            && !pending.contains("/provenance\""),
        "{pending}"
    );
    assert!(!page.raw.contains(HOSTILE));
}
