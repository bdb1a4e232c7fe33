//! Approvals people can act on, and `waiting` as a run status of its own:
//! - per role (anonymous, reader, the writer who started the run, another writer, a
//!   maintainer, the admin), the approval panel on the run page and on the approval
//!   step's page shows the question, who may decide and the deadline, and offers Approve
//!   and Reject exactly to those the API accepts — the others are told why, and a form
//!   they post anyway changes nothing;
//! - a waiting run is `waiting` in the API's run view and list, `?status=waiting` finds it
//!   (and `running` does not), and the run view carries the approval's question;
//! - the API's runs list filters by status, workflow, branch and event and pages by an
//!   opaque cursor, refusing a forged one;
//! - in headless Chromium a writer approves from the banner with a comment, and the run
//!   goes on;
//! - `plue run` of a workflow with an approval says what it asks, who decides, until when,
//!   and the exact `plue approve` command, which decides it from another process.
//!
//! The browser test says so and passes without Chromium and chromedriver, unless
//! `PLUE_REQUIRE_BROWSER=1`; the rest needs no browser.
//!
//! Why one file past ~600 lines: the approval walk per role on one engine fixture (API,
//! banner, browser, `plue run`'s prompt); the roles' table reads in one place.

use std::time::Duration;

use crate::support;

use evaluator::plan::{Action, ApprovalAction, Plan, Step};
use plue_server::server::RunningEngine;
use plue_store::{Store, Triggerer};
use plue_types::status::StepStatus;
use serde_json::Value;

use crate::support::{user_with_token, wait_for, Sandbox};
use crate::webdriver::{bounded, browser_or_skip, Browser};

const ADMIN: &str = "admin-token-of-the-approval-tests";
const QUESTION: &str = "Ship <b>build 42</b> to production?";

/// An approval step `gate` (exclude_triggerer, any writer) asking [`QUESTION`], then a
/// bash step `ship` after it.
fn gated_plan(name: &str) -> Plan {
    let mut gate = Step::new(
        "gate",
        Action::Approval(ApprovalAction {
            message: Some(QUESTION.into()),
            approvers: vec![],
            exclude_triggerer: true,
        }),
    );
    gate.timeout = 3600;
    let mut ship = support::bash_step("ship", "echo shipped");
    ship.depends_on = vec!["gate".into()];
    support::plan(name, vec![gate, ship])
}

struct World {
    engine: RunningEngine,
    repo_id: i64,
    reader: String,
    starter: String,
    writer: String,
    maintainer: String,
    starter_id: i64,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = support::admin_config("registration-token", ADMIN);
        let engine = support::start_in_process(dir.path(), config).await;
        let store = engine.executor.store().clone();
        let repo_id = support::create_repo(&store).await;
        let (_, _, reader) = user_with_token(&store, "rita", &[(repo_id, "reader")]).await;
        let (starter_id, _, starter) = user_with_token(&store, "sam", &[(repo_id, "writer")]).await;
        let (_, _, writer) = user_with_token(&store, "wanda", &[(repo_id, "writer")]).await;
        let (_, _, maintainer) = user_with_token(&store, "max", &[(repo_id, "maintainer")]).await;
        World {
            engine,
            repo_id,
            reader,
            starter,
            writer,
            maintainer,
            starter_id,
            _dir: dir,
        }
    }

    fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    /// A run of [`gated_plan`] started by `sam`, once its gate waits.
    async fn waiting_run(&self, name: &str) -> i64 {
        let id = support::start_repo_run(
            &self.engine.executor,
            "acme/app",
            self.repo_id,
            &gated_plan(name),
        )
        .await;
        self.store()
            .record_trigger(
                id,
                &Triggerer {
                    name: "sam".into(),
                    user_id: Some(self.starter_id),
                    forge_login: None,
                },
            )
            .await
            .unwrap();
        wait_for(Duration::from_secs(20), "the gate waits", || async {
            let step = self.store().step_run(id, "gate").await.unwrap()?;
            (step.status == StepStatus::Waiting).then_some(())
        })
        .await;
        id
    }

    async fn gate_status(&self, run_id: i64) -> String {
        self.store()
            .step_run(run_id, "gate")
            .await
            .unwrap()
            .unwrap()
            .status
            .to_string()
    }

    /// `GET path` of the API with `token`: status and JSON.
    async fn api(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.engine.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A dashboard visitor: signed in with a token, or anonymous.
struct Visitor {
    cookie: Option<String>,
    csrf: String,
}

impl Visitor {
    async fn signed_in(engine: &str, token: &str) -> Visitor {
        let cookie = support::dashboard_session(engine, token).await;
        let csrf = cookie
            .split("; ")
            .find_map(|pair| pair.strip_prefix("plue_csrf="))
            .expect("a CSRF cookie")
            .to_owned();
        Visitor {
            cookie: Some(cookie),
            csrf,
        }
    }

    fn anonymous() -> Visitor {
        Visitor {
            cookie: None,
            csrf: String::new(),
        }
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// `GET path` of the dashboard: status and body.
    async fn get(&self, engine: &str, path: &str) -> (u16, String) {
        let mut request = Self::http().get(format!("{engine}{path}"));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Posts the panel's form (`verb`: approve or reject) with `comment`: status and body.
    async fn decide(&self, engine: &str, run_id: i64, verb: &str, comment: &str) -> (u16, String) {
        let mut request = Self::http()
            .post(format!("{engine}/runs/{run_id}/steps/gate/{verb}"))
            .form(&[("csrf", self.csrf.as_str()), ("comment", comment)]);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

/// Whether `html` offers the decision form of step `gate`.
fn offers_decision(html: &str) -> bool {
    html.contains(r#"data-approve="gate""#) && html.contains(r#"data-reject="gate""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_offers_a_decision_exactly_to_those_the_api_accepts() {
    let world = World::new().await;
    let url = world.engine.url.clone();
    let run = world.waiting_run("Deploy").await;
    let escaped_question = "Ship &lt;b&gt;build 42&lt;&#x2f;b&gt; to production?";
    let pages = [format!("/runs/{run}"), format!("/runs/{run}/steps/gate")];

    // The anonymous: sent to sign in; nothing of the question shows.
    let anonymous = Visitor::anonymous();
    for page in &pages {
        let (status, body) = anonymous.get(&url, page).await;
        assert!(matches!(status, 303 | 401 | 404), "{page}: {status}");
        assert!(!body.contains("build 42"), "{page}: {body}");
    }
    let (status, _) = anonymous.decide(&url, run, "approve", "").await;
    assert!(status >= 400, "an anonymous post: {status}");

    // Those who may read but not decide see the question and why not, and no form; a
    // form posted anyway is refused and changes nothing.
    let refused = [
        (world.reader.as_str(), "reader", "writer"),
        (
            world.starter.as_str(),
            "the writer who started it",
            "started this run",
        ),
    ];
    for (token, who, why) in refused {
        let visitor = Visitor::signed_in(&url, token).await;
        for page in &pages {
            let (status, body) = visitor.get(&url, page).await;
            assert_eq!(status, 200, "{who} {page}: {body}");
            assert!(body.contains(escaped_question), "{who} {page}: {body}");
            assert!(
                body.contains("any writer of the repository")
                    && body.contains("not whoever started the run"),
                "{who} {page}: the deciders"
            );
            assert!(
                body.contains("<time datetime="),
                "{who} {page}: the deadline"
            );
            assert!(!offers_decision(&body), "{who} {page}: offered a decision");
            let why_not = body
                .split(r#"<p class="why-not">"#)
                .nth(1)
                .unwrap_or_else(|| panic!("{who} {page}: no reason given: {body}"));
            assert!(why_not.contains(why), "{who} {page}: {why_not}");
        }
        let (status, body) = visitor.decide(&url, run, "approve", "me").await;
        assert_eq!(status, 403, "{who} posting the form: {body}");
        assert_eq!(world.gate_status(run).await, "waiting", "{who}");
    }
    // An approval step's page shows the panel, not a log viewer.
    let writer = Visitor::signed_in(&url, &world.writer).await;
    // A writer's session with a form token that is not the session's (a cross-site form)
    // decides nothing.
    let forged = Visitor {
        cookie: writer.cookie.clone(),
        csrf: "0".repeat(writer.csrf.len()),
    };
    let (status, body) = forged.decide(&url, run, "approve", "").await;
    assert_eq!(status, 403, "a forged form token: {body}");
    assert_eq!(world.gate_status(run).await, "waiting");
    let (_, step_page) = writer.get(&url, &format!("/runs/{run}/steps/gate")).await;
    assert!(offers_decision(&step_page), "{step_page}");
    assert!(!step_page.contains(r#"id="viewport""#), "{step_page}");
    assert!(!step_page.contains("/assets/log.js"), "{step_page}");

    // Another writer, a maintainer and the admin are offered the decision, and it is
    // taken as the API takes it (each on a run of its own).
    let deciders = [
        (world.writer.as_str(), "wanda", "approve", "succeeded"),
        (world.maintainer.as_str(), "max", "reject", "failed"),
        (ADMIN, "admin", "approve", "succeeded"),
    ];
    for (i, (token, name, verb, outcome)) in deciders.into_iter().enumerate() {
        let run = if i == 0 {
            run
        } else {
            world.waiting_run(&format!("Deploy {i}")).await
        };
        let visitor = Visitor::signed_in(&url, token).await;
        let (_, body) = visitor.get(&url, &format!("/runs/{run}")).await;
        assert!(offers_decision(&body), "{name}: {body}");
        assert!(!body.contains(r#"class="why-not""#), "{name}");
        let comment = format!("checked by {name}");
        let (status, body) = visitor.decide(&url, run, verb, &comment).await;
        assert_eq!(status, 303, "{name} {verb}: {body}");
        assert_eq!(world.gate_status(run).await, outcome, "{name}");
        let (_, approvals) = world
            .api(&format!("/api/runs/{run}/approvals"), Some(ADMIN))
            .await;
        assert_eq!(approvals[0]["decided_by"], name, "{approvals}");
        assert_eq!(approvals[0]["comment"], comment.as_str(), "{approvals}");
        // Decided, the step's page shows the decision and offers nothing.
        let (_, page) = visitor.get(&url, &format!("/runs/{run}/steps/gate")).await;
        assert!(!offers_decision(&page), "{name}: {page}");
        assert!(page.contains(&comment), "{name}: {page}");
        // A second decision is the API's 409, shown as such.
        let (status, _) = visitor.decide(&url, run, verb, "again").await;
        assert_eq!(status, 409, "{name}: a second decision");
    }
    // A comment the API refuses (a control character) is refused here too.
    let run = world.waiting_run("Deploy 9").await;
    let (status, body) = writer.decide(&url, run, "approve", "a\u{202e}b").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(world.gate_status(run).await, "waiting");
    world.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_waiting_in_the_api_with_its_question() {
    let world = World::new().await;
    let run = world.waiting_run("Deploy").await;
    let (status, view) = world.api(&format!("/api/runs/{run}"), Some(ADMIN)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "waiting", "{view}");
    let gate = support::step(&view, "gate");
    assert_eq!(gate["approval"]["message"], QUESTION, "{gate}");
    assert_eq!(gate["approval"]["exclude_triggerer"], true);
    assert_eq!(gate["approval"]["approvers"], serde_json::json!([]));
    assert_eq!(gate["approval"]["deadline"], gate["ready_at"], "{gate}");
    let listed = |query: &'static str| {
        let world = &world;
        async move {
            let (status, page) = world.api(&format!("/api/runs?{query}"), Some(ADMIN)).await;
            assert_eq!(status, 200, "{query}: {page}");
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["id"].as_i64().unwrap(),
                        r["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("").await, vec![(run, "waiting".to_owned())]);
    assert_eq!(
        listed("status=waiting").await,
        vec![(run, "waiting".to_owned())]
    );
    assert!(listed("status=running").await.is_empty());
    // A reader sees the same; the dashboard's list and filter too.
    let (_, page) = world
        .api("/api/runs?status=waiting", Some(&world.reader))
        .await;
    assert_eq!(page["runs"][0]["status"], "waiting", "{page}");
    let reader = Visitor::signed_in(&world.engine.url, &world.reader).await;
    let (_, html) = reader.get(&world.engine.url, "/?status=waiting").await;
    assert!(
        html.contains(&format!(r#"href="/runs/{run}""#)) && html.contains("badge waiting"),
        "{html}"
    );
    let (_, html) = reader.get(&world.engine.url, "/?status=running").await;
    assert!(!html.contains(&format!(r#"href="/runs/{run}""#)), "{html}");
    world.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_filters_and_pages_by_an_opaque_cursor() {
    let world = World::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let plan = support::plan(
            if i % 2 == 0 { "ci" } else { "deploy" },
            vec![support::bash_step("a", "true")],
        );
        // A workflow file each: a workflow's name is its file's latest plan's.
        let path = format!("w{i}.plue.py");
        let repo = plue_store::RunRepo {
            repo_id: world.repo_id,
            secrets_allowed: true,
        };
        ids.push(support::start_plan_run(&world.engine.executor, &path, &plan, Some(repo)).await);
    }
    ids.push(world.waiting_run("gated").await);
    // Page by page, newest first, each run once.
    let mut seen = Vec::new();
    let mut query = "/api/runs?limit=2".to_owned();
    loop {
        let (status, page) = world.api(&query, Some(&world.reader)).await;
        assert_eq!(status, 200, "{query}: {page}");
        seen.extend(
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(
                    cursor
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                    "{cursor}"
                );
                query = format!("/api/runs?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);
    let count = |query: String| {
        let world = &world;
        async move {
            let (status, page) = world.api(&query, Some(ADMIN)).await;
            assert_eq!(status, 200, "{query}: {page}");
            page["runs"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("/api/runs?workflow=ci".into()).await, 3);
    assert_eq!(count("/api/runs?workflow=deploy&limit=1".into()).await, 1);
    assert_eq!(count("/api/runs?branch=main".into()).await, 6);
    assert_eq!(count("/api/runs?branch=refs/heads/main".into()).await, 6);
    assert_eq!(count("/api/runs?branch=other".into()).await, 0);
    assert_eq!(count("/api/runs?event=manual".into()).await, 6);
    assert_eq!(count("/api/runs?event=push".into()).await, 0);
    assert_eq!(
        count("/api/runs?status=waiting&workflow=gated".into()).await,
        1
    );
    assert_eq!(
        count("/api/runs?repo=acme/app&status=waiting".into()).await,
        1
    );
    // A forged or foreign cursor, an unknown status or event, an empty filter: 400s that
    // say what was wrong.
    for (query, says) in [
        ("cursor=eDox", "cursor"),
        ("cursor=cjow", "cursor"),
        ("cursor=not!base64", "cursor"),
        ("status=paused", "status"),
        ("event=tag", "event"),
        ("workflow=", "workflow"),
    ] {
        let (status, error) = world.api(&format!("/api/runs?{query}"), Some(ADMIN)).await;
        assert_eq!(status, 400, "{query}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{query}: {error}"
        );
    }
    // The document says the same.
    let (_, document) = world.api("/api/openapi.json", None).await;
    let params = document["paths"]["/api/runs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}: {params:?}"))
            .clone()
    };
    assert_eq!(param("cursor")["schema"]["pattern"], "^r[1-9][0-9]{0,17}$");
    let statuses = param("status").to_string();
    assert!(
        statuses.contains("\"waiting\"") && statuses.contains("\"cancelled\""),
        "{statuses}"
    );
    assert!(param("event").to_string().contains("\"pull_request\""));
    assert_eq!(param("workflow")["schema"]["minLength"], 1);
    let page_schema = &document["components"]["schemas"]["RunsPageView"];
    assert!(
        page_schema["properties"]["next_cursor"].is_object(),
        "{page_schema}"
    );
    world.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_approves_from_the_banner_with_a_comment() {
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    bounded(Duration::from_secs(180), async {
        let world = World::new().await;
        let run = world.waiting_run("Deploy").await;
        let sandbox = Sandbox::new("dashboard-approvals");
        let (url, writer) = (&world.engine.url, &world.writer);
        let run_page = format!("/runs/{run}");
        let installed = (chromium.as_path(), driver.as_path());
        let browser = Browser::signed_in_on(&sandbox, installed, url, writer, &run_page).await;
        let banner = browser
            .wait(
                Duration::from_secs(20),
                "the approval banner",
                "const s = document.querySelector('#approval-gate'); if (!s) return null; \
                 const status = document.querySelector('#run-status'); \
                 return [s.querySelector('.approval-message').textContent, \
                   s.querySelector('.approvers').textContent, \
                   !!s.querySelector('.deadline time[datetime]'), \
                   status.className, status.textContent.trim(), \
                   s.getBoundingClientRect().top < document.querySelector('dl.facts:not(.approval-facts)').getBoundingClientRect().top];",
            )
            .await;
        assert_eq!(banner[0], QUESTION, "{banner}");
        assert!(banner[1].as_str().unwrap().contains("any writer"), "{banner}");
        assert_eq!(banner[2], true, "a deadline: {banner}");
        assert!(banner[3].as_str().unwrap().contains("waiting"), "{banner}");
        assert!(banner[4].as_str().unwrap().ends_with("waiting"), "{banner}");
        assert_eq!(banner[5], true, "the banner is at the top: {banner}");
        browser.shot("dashboard-approval.png").await;
        // On a phone, in the dark: the banner fits the width (nothing to scroll sideways)
        // and its buttons are on screen.
        browser.emulate(390, 844, true).await;
        let fits = browser
            .wait(
                Duration::from_secs(10),
                "the phone layout",
                "const s = document.querySelector('#approval-gate'); \
                 const b = document.querySelector('button[data-reject=\"gate\"]'); \
                 if (!s || !b || window.innerWidth > 400) return null; \
                 return [s.getBoundingClientRect().right <= window.innerWidth, \
                   b.getBoundingClientRect().right <= window.innerWidth];",
            )
            .await;
        assert_eq!(fits, serde_json::json!([true, true]), "on a phone");
        browser.shot("dashboard-approval-phone-dark.png").await;
        browser.emulate(1280, 800, false).await;
        browser.type_into("#comment-gate", "looks good").await;
        browser.click("button[data-approve='gate']").await;
        // The banner stays, saying who decided and what they said, with no buttons left.
        let decided = browser
            .wait(
                Duration::from_secs(20),
                "the decision shown",
                "const d = document.querySelector('#approval-gate [data-decision]'); \
                 if (!d || document.querySelector('button[data-approve=\"gate\"]')) return null; \
                 return [d.dataset.decision, d.textContent.includes('looks good')];",
            )
            .await;
        assert_eq!(decided, serde_json::json!(["approved", true]), "{decided}");
        assert_eq!(world.gate_status(run).await, "succeeded");
        let (_, approvals) = world
            .api(&format!("/api/runs/{run}/approvals"), Some(ADMIN))
            .await;
        assert_eq!(approvals[0]["comment"], "looks good", "{approvals}");
        assert_eq!(approvals[0]["decided_by"], "wanda", "{approvals}");
        browser.close_without_console_errors().await;
        world.engine.shutdown().await;
    })
    .await;
}

const GATED_WORKFLOW: &str = r#"
def workflow(ctx):
    return Plan(name="release", steps=[
        Step.approval("gate", message="Ship build 42?", approvers=["alice", "@ops"], timeout=600),
        Step.bash("ship", "echo shipped", depends_on=["gate"]),
    ])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_run_says_what_an_approval_asks_and_plue_approve_decides_it() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("plue-run-approval");
    let file = sandbox.write("release.plue.py", GATED_WORKFLOW);
    let data = sandbox.path("data");
    let mut command = sandbox.plue(&["run", file.to_str().unwrap(), "--runners", "1"]);
    command.env("PLUE_DATA_DIR", &data);
    let pid = sandbox.spawn("run", command);
    let err = sandbox.path("run.err");
    let said = wait_for(
        Duration::from_secs(60),
        "the approval's announcement",
        || async {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            text.contains("reject:").then_some(text)
        },
    )
    .await;
    let data_dir = std::fs::canonicalize(&data).unwrap();
    for expected in [
        "step 'gate' waits for a decision: Ship build 42?".to_owned(),
        "approvers: alice, @ops".to_owned(),
        "deadline:  ".to_owned(),
        format!(
            "approve:   plue approve 1 gate --data-dir {}",
            data_dir.display()
        ),
    ] {
        assert!(said.contains(&expected), "{expected:?} in:\n{said}");
    }
    // Not a terminal: nothing asked.
    assert!(!said.contains("[y/n]"), "{said}");
    // `plue runs` lists it as waiting, and finds it by that status alone.
    for status in [None, Some("waiting"), Some("running")] {
        let mut args = vec!["runs", "--data-dir", data_dir.to_str().unwrap()];
        if let Some(status) = status {
            args.extend(["--status", status]);
        }
        let listed = sandbox.plue(&args).output().unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        let shown = listed
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("waiting"));
        assert_eq!(shown, status != Some("running"), "{status:?}:\n{listed}");
    }
    // The printed command decides it, from another process.
    let data = data_dir.to_str().unwrap();
    let approve = ["approve", "1", "gate", "--data-dir", data];
    let approved =
        sandbox.plue_ok(&[&approve[..], &["--comment", "from another terminal"]].concat());
    assert!(approved.contains("approved"));
    let status = sandbox.wait_exit(pid, Duration::from_secs(60)).await;
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "plue run: {status}\n{said}");
    // It is gone with the run: nobody reaches a finished `plue run`.
    let after = sandbox.plue(&approve).output().unwrap();
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("no `plue run` of run 1"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_run_on_a_terminal_asks_and_the_answer_decides() {
    use std::io::Write;
    let _serial = support::serial().await;
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: no script(1) to give plue run a terminal");
        return;
    }
    let sandbox = Sandbox::new("plue-run-approval-tty");
    let file = sandbox.write("release.plue.py", GATED_WORKFLOW);
    // `plue run` on a pseudo-terminal made by script(1), with the sandbox's environment.
    let template = sandbox.plue(&[]);
    let mut command = std::process::Command::new("script");
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let line = format!(
        "{} run {} --runners 1 --data-dir {}",
        env!("CARGO_BIN_EXE_plue"),
        file.display(),
        sandbox.path("data").display()
    );
    let out = sandbox.path("tty.out");
    command
        .args(["-qefc", &line])
        .arg(&out)
        .current_dir(template.get_current_dir().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("script(1)");
    let asked = wait_for(Duration::from_secs(60), "the question", || async {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.contains("[y/n]").then_some(text)
    })
    .await;
    assert!(
        asked.contains("approve step 'gate' of run 1? [y/n]"),
        "{asked}"
    );
    assert!(asked.contains("Ship build 42?"), "{asked}");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    stdin.flush().unwrap();
    let status = wait_for(Duration::from_secs(60), "plue run to end", || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "plue run: {status}\n{said}");
    assert!(said.contains("step 'gate' approved by"), "{said}");
    assert!(said.contains("shipped"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_review_is_offered_to_its_reviewers_only() {
    let world = World::new().await;
    let url = world.engine.url.clone();
    // prod is reviewed by max alone; the deploy step under it waits for that review.
    let (status, body) = {
        let response = reqwest::Client::new()
            .put(format!("{url}/api/repos/acme/app/environments/prod"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"allowed_refs": ["**"], "reviewers": ["max"]}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(status, 200, "{body}");
    let mut deploy = support::bash_step("deploy", "echo deployed");
    deploy.environment = Some("prod".into());
    let run = support::start_push_run(
        &world.engine.executor,
        world.repo_id,
        &support::plan("Release", vec![deploy]),
        "main",
    )
    .await;
    wait_for(Duration::from_secs(20), "the review waits", || async {
        let step = world.store().step_run(run, "deploy").await.unwrap()?;
        assert!(!step.status.as_str().starts_with('f'), "{:?}", step.reason);
        (step.status == StepStatus::Waiting).then_some(())
    })
    .await;
    let pages = [format!("/runs/{run}"), format!("/runs/{run}/steps/deploy")];
    // A writer not named, the admin not named: told who decides, offered nothing.
    for token in [world.writer.as_str(), ADMIN] {
        let visitor = Visitor::signed_in(&url, token).await;
        for page in &pages {
            let (status, body) = visitor.get(&url, page).await;
            assert_eq!(status, 200, "{page}: {body}");
            assert!(
                body.contains("Review of environment <strong>prod</strong>"),
                "{page}: {body}"
            );
            assert!(!body.contains(r#"data-approve="deploy""#), "{page}: {body}");
            assert!(body.contains("its deciders are max"), "{page}: {body}");
        }
    }
    // The reviewer is offered it, on both pages (the step's log stays below the panel).
    let max = Visitor::signed_in(&url, &world.maintainer).await;
    for page in &pages {
        let (_, body) = max.get(&url, page).await;
        assert!(body.contains(r#"data-approve="deploy""#), "{page}: {body}");
    }
    let (_, step_page) = max.get(&url, &pages[1]).await;
    assert!(step_page.contains(r#"id="viewport""#), "{step_page}");
    world.engine.shutdown().await;
}
